"""The files of the FMA-shaped sample source (devkit/fma_sample.py), as text: pure, no I/O.

The layout follows Fast Model Actuation's at v0.6.4 (Go mains under cmd/ built by ko, two
Dockerfiles under dockerfiles/, the launcher's Python files, the fma-controllers chart), but
every file is written here for the sample: small Go mains with no dependency outside the
standard library, a chart of our own, placeholder Python.
"""

from __future__ import annotations

MODULE = "example.invalid/fma-sample"
VERSION_VAR = f"{MODULE}/pkg/buildinfo.Version"
INSPECTOR_IMAGE = "busybox:1.38.0"  # a third-party image the chart uses as it is (not pinned)
REQUESTER_BUILDERS = ("busybox", "go", "fails")
# What the "fails" requester's RUN says on stderr before it exits 3: a test finds it on the console.
REQUESTER_FAILURE = "requester-sample: cannot fetch the GPU device map (no route to gpu-catalog.example.invalid)"
# A third-party image the chart uses only when a values switch is turned on (as FMA's
# global.produceCoverdata brings in its inspector at v0.6.5-alpha.1).
METRICS_PROXY_IMAGE = "quay.io/brancz/kube-rbac-proxy:v0.18.1"
METRICS_PROXY_SWITCH = "dualPodsController.secureMetrics=true"
# Sources that fail the proof on a Kubernetes API server (docs/fma-sample.md):
# "forbidden-nodes": the chart never binds global.nodeViewClusterRole, so the dual-pods controller's
# list of nodes is forbidden; "invalid-policy": the chart makes a LauncherPolicy its CRD's schema refuses.
PROOF_FAULTS = ("forbidden-nodes", "invalid-policy")
CRD_GROUP = "fma-sample.example.invalid"
CRDS_FILE = "config/crds.yaml"

# -- Go ---------------------------------------------------------------------------

GO_MOD = f"module {MODULE}\n\ngo 1.22\n"

BUILDINFO_GO = """\
// Package buildinfo tells which program of the sample is running, its version and platform.
package buildinfo

import (
	"fmt"
	"os"
	"runtime"
)

// Version is set when linking: -ldflags "-X example.invalid/fma-sample/pkg/buildinfo.Version=v0.6.4".
var Version = "dev"

// Line describes the running program in one line.
func Line(program string) string {
	return fmt.Sprintf("%s version=%s platform=%s/%s coverdata=%s%s",
		program, Version, runtime.GOOS, runtime.GOARCH, coverDir(), note)
}

// coverDir is where a coverage-instrumented build leaves its counters; the programs run the
// same without it.
func coverDir() string {
	if dir := os.Getenv("GOCOVERDIR"); dir != "" {
		return dir
	}
	return "none"
}
"""
INCLUSTER_GO = """\
// Package incluster talks to the Kubernetes API server as a client in a Pod does: the server's
// address from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, the service account's token
// and the cluster's CA from the files Kubernetes mounts for the Pod. Plain net/http: the sample
// needs no client library.
package incluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// AccountDir is where Kubernetes mounts a Pod's service account.
const AccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster tells whether the program runs where Kubernetes gives it an API server.
func InCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != ""
}

// Client lists collections of the API server with the service account's token.
type Client struct {
	base   string
	token  string
	client *http.Client
}

// New reads what Kubernetes gives the Pod; an error names what is missing.
func New() (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
	}
	token, err := os.ReadFile(AccountDir + "/token")
	if err != nil {
		return nil, fmt.Errorf("no service account token: %w", err)
	}
	ca, err := os.ReadFile(AccountDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("no cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New(AccountDir + "/ca.crt holds no certificate")
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return &Client{
		base:   "https://" + net.JoinHostPort(host, port),
		token:  strings.TrimSpace(string(token)),
		client: &http.Client{Timeout: 10 * time.Second, Transport: transport},
	}, nil
}

// Count lists the collection at path (such as /api/v1/nodes) and tells how many items it holds.
// A refusal is the server's own message, such as "nodes is forbidden: ...". Like client-go, it asks
// again when the server says to wait (429, or 503 with Retry-After: a resource just made is still
// starting), up to ten times.
func (c *Client) Count(path string) (int, error) {
	for attempt := 1; ; attempt++ {
		n, wait, err := c.count(path)
		if wait == 0 || attempt == 10 {
			return n, err
		}
		time.Sleep(wait)
	}
}

func (c *Client) count(path string) (int, time.Duration, error) {
	request, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, 0, err
	}
	request.Header.Set("Authorization", "Bearer "+c.token)
	request.Header.Set("Accept", "application/json")
	response, err := c.client.Do(request)
	if err != nil {
		return 0, 0, err
	}
	defer response.Body.Close()
	var body struct {
		Message string            `json:"message"`
		Items   []json.RawMessage `json:"items"`
	}
	decodeErr := json.NewDecoder(io.LimitReader(response.Body, 64<<20)).Decode(&body)
	if response.StatusCode != http.StatusOK {
		err := fmt.Errorf("GET %s: %s", path, response.Status)
		if body.Message != "" {
			err = errors.New(body.Message)
		}
		return 0, retryAfter(response), err
	}
	if decodeErr != nil {
		return 0, 0, fmt.Errorf("GET %s: %w", path, decodeErr)
	}
	return len(body.Items), 0, nil
}

// retryAfter is how long the server asked to wait before asking again, 0 when it did not.
func retryAfter(response *http.Response) time.Duration {
	seconds, err := strconv.Atoi(response.Header.Get("Retry-After"))
	busy := response.StatusCode == http.StatusTooManyRequests
	starting := response.StatusCode == http.StatusServiceUnavailable && err == nil
	switch {
	case !busy && !starting:
		return 0
	case err != nil || seconds < 1:
		return time.Second
	case seconds > 10:
		return 10 * time.Second
	}
	return time.Duration(seconds) * time.Second
}

// Serve is a controller's life in the sample: list each collection once (a controller's caches),
// say so, then list them again every period until SIGTERM or SIGINT. The first failure ends the
// program with the server's message and exit code 1; a signal ends it with 0.
func Serve(program string, period time.Duration, collections ...string) int {
	client, err := New()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: cannot talk to the API server: %v\\n", program, err)
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for round := 0; ; round++ {
		counts := make([]string, 0, len(collections))
		for _, path := range collections {
			n, err := client.Count(path)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: failed to list %s: %v\\n", program, path, err)
				return 1
			}
			counts = append(counts, fmt.Sprintf("%d in %s", n, path))
		}
		if round == 0 {
			fmt.Printf("%s: caches synced: %s\\n", program, strings.Join(counts, ", "))
		}
		select {
		case <-stop:
			fmt.Printf("%s: stopping\\n", program)
			return 0
		case <-ticker.C:
		}
	}
}
"""

NOTE_AT_TAG = 'package buildinfo\n\n// note ends every Line.\nconst note = ""\n'
NOTE_AFTER_TAG = 'package buildinfo\n\n// note ends every Line.\nconst note = " (unreleased work after the tag)"\n'

DUAL_PODS_MAIN = """\
// Command dual-pods-controller of the sample: it takes the flags the chart passes and says what
// it is and where it runs. In a Pod it then watches, as FMA's does, the Pods of its namespace and
// the cluster's Nodes (which the chart grants through global.nodeViewClusterRole) and stays up;
// elsewhere it exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"example.invalid/fma-sample/pkg/buildinfo"
	"example.invalid/fma-sample/pkg/generated/clientset/versioned"
	"example.invalid/fma-sample/pkg/incluster"
)

func main() {
	verbosity := flag.Int("v", 0, "log verbosity")
	namespace := flag.String("namespace", versioned.DefaultNamespace(), "the namespace whose Pods are paired")
	sleepers := flag.Int("sleeper-limit", 2, "sleeping inference servers kept per GPU")
	memory := flag.Bool("debug-accelerator-memory", false, "log the accelerator memory each requester reports")
	flag.Parse()
	fmt.Println(buildinfo.Line("dual-pods-controller"))
	fmt.Printf("namespace=%s sleeper-limit=%d debug-accelerator-memory=%t v=%d\\n",
		*namespace, *sleepers, *memory, *verbosity)
	if incluster.InCluster() {
		os.Exit(incluster.Serve("dual-pods-controller", 5*time.Second,
			"/api/v1/namespaces/"+*namespace+"/pods", "/api/v1/nodes"))
	}
}
"""

# Stand-ins for FMA's generated client code (pkg/generated/, made by Kubernetes' code generators), which
# upstream's coverage build leaves out. The dual-pods controller uses the clientset, as FMA's does.
GENERATED_DIR = "pkg/generated"
GENERATED_CLIENTSET_GO = """\
// Package versioned stands in for a generated Kubernetes clientset.
package versioned

// DefaultNamespace is the namespace a client works in when none is given.
func DefaultNamespace() string {
	return "default"
}
"""
GENERATED_LISTER_GO = """\
// Package v1alpha1 stands in for generated listers of the fma.llm-d.ai/v1alpha1 API.
package v1alpha1

// Kinds lists the kinds this API version serves.
func Kinds() []string {
	return []string{"InferenceServerConfig", "LauncherConfig", "LauncherPopulationPolicy"}
}
"""

POPULATOR_MAIN = """\
// Command launcher-populator of the sample: it takes the flags the chart passes and says what it
// is and where it runs. In a Pod it then watches the LauncherPolicies (config/crds.yaml) and Pods
// of its namespace and stays up; elsewhere it exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"example.invalid/fma-sample/pkg/buildinfo"
	"example.invalid/fma-sample/pkg/incluster"
)

func main() {
	verbosity := flag.Int("v", 0, "log verbosity")
	namespace := flag.String("namespace", "default", "the namespace whose launcher Pods are kept")
	flag.Parse()
	fmt.Println(buildinfo.Line("launcher-populator"))
	fmt.Printf("namespace=%s v=%d\\n", *namespace, *verbosity)
	if incluster.InCluster() {
		os.Exit(incluster.Serve("launcher-populator", 5*time.Second,
			"/apis/fma-sample.example.invalid/v1alpha1/namespaces/"+*namespace+"/launcherpolicies",
			"/api/v1/namespaces/"+*namespace+"/pods"))
	}
}
"""

REQUESTER_MAIN = """\
// Command requester of the sample: in FMA it runs in the Pod that asks for a GPU; here it says
// what it is and where it runs, and exits.
package main

import (
	"flag"
	"fmt"

	"example.invalid/fma-sample/pkg/buildinfo"
)

func main() {
	port := flag.Int("port", 8081, "port of the requester's own API")
	flag.Parse()
	fmt.Println(buildinfo.Line("requester"))
	fmt.Printf("port=%d\\n", *port)
}
"""


def ko_yaml(ko_base: str) -> str:
    """.ko.yaml: the base of every ko image, pinned by digest, and one build with the version linked in."""
    return (
        "# ko builds the controllers FROM this base (pinned by digest) into /ko-app/<name>.\n"
        f"defaultBaseImage: {ko_base}\n"
        "builds:\n"
        "  - id: dual-pods-controller\n"
        "    main: ./cmd/dual-pods-controller\n"
        "    ldflags:\n"
        f"      - -X {VERSION_VAR}={{{{.Git.Tag}}}}\n"
    )


# -- Dockerfiles --------------------------------------------------------------------


def requester_dockerfile(builder_base: str, runtime_base: str, builder: str = "busybox") -> str:
    """The requester's Dockerfile: a builder stage on the build machine's platform, a final
    stage on the target's. ``builder``: ``busybox`` records what it would build; ``go``
    cross-compiles ./cmd/requester with the Go toolchain of ``builder_base``; ``fails`` is the busybox
    one whose RUN prints some lines, then :data:`REQUESTER_FAILURE`, all on stderr, and exits 3."""
    if builder not in REQUESTER_BUILDERS:
        raise ValueError(f"requester builder {builder!r} is not one of {', '.join(REQUESTER_BUILDERS)}")
    head = (
        "# The builder stage runs on the build machine's own platform (no emulation);\n"
        "# only the final stage is of the target platform.\n"
        f"FROM --platform=$BUILDPLATFORM {builder_base} AS builder\n"
        "ARG TARGETOS\n"
        "ARG TARGETARCH\n"
    )
    if builder == "busybox":
        body = (
            "WORKDIR /workspace\n"
            "COPY go.mod go.mod\n"
            "COPY cmd/requester/ cmd/requester/\n"
            'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /out'
            " && /bin/busybox uname -m > /out/built-on"
            " && echo $TARGETOS/$TARGETARCH > /out/target"
            ' && /bin/busybox cp cmd/requester/main.go /out/requester.go"]\n'
        )
        entry = 'ENTRYPOINT ["/bin/busybox", "cat", "/app/built-on", "/app/target"]\n'
    elif builder == "fails":
        body = (
            "WORKDIR /workspace\n"
            "COPY go.mod go.mod\n"
            # All on stderr: BuildKit reads stdout and stderr apart, so only one stream keeps its order.
            'RUN ["/bin/busybox", "sh", "-c", "{ echo fetching the device map for $TARGETOS/$TARGETARCH;'
            " for i in $(/bin/busybox seq 1 12); do echo attempt $i of 12; done;"
            f' echo \'{REQUESTER_FAILURE}\'; }} >&2; exit 3"]\n'
        )
        entry = 'ENTRYPOINT ["/bin/busybox", "true"]\n'
    else:
        body = (
            'RUN echo "building on $(uname -m) for $TARGETOS/$TARGETARCH"\n'
            "WORKDIR /workspace\n"
            "COPY go.mod go.mod\n"
            "COPY pkg/ pkg/\n"
            "COPY cmd/ cmd/\n"
            "ARG VERSION=dev\n"
            "RUN mkdir -p /out && uname -m > /out/built-on && echo $TARGETOS/$TARGETARCH > /out/target \\\n"
            "    && CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \\\n"
            f'       go build -trimpath -ldflags "-X {VERSION_VAR}=$VERSION" -o /out/requester ./cmd/requester\n'
        )
        entry = 'ENTRYPOINT ["/app/requester"]\n'
    return (
        head + body + "\n"
        f"FROM {runtime_base}\n"
        "WORKDIR /\n"
        "COPY --from=builder /out/ /app/\n"
        + entry
    )


LAUNCHER_FILES = ("launcher.py", "gputranslator.py", "launcher_pod_notifier.py")


def launcher_dockerfile(launcher_base: str) -> str:
    """The launcher's Dockerfile: FROM a base given as a build argument, the launcher's files, one RUN."""
    files = " ".join(f"inference_server/launcher/{name}" for name in LAUNCHER_FILES)
    return (
        f"ARG BASE_IMAGE={launcher_base}\n"
        "FROM ${BASE_IMAGE}\n"
        "WORKDIR /app\n"
        f"COPY {files} /app/\n"
        "# Stands in for installing the launcher's Python dependencies: records what was installed where.\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sha256sum /app/*.py > /app/installed'
        ' && /bin/busybox uname -m > /app/built-on"]\n'
        "# The launcher is started by a Pod that gives its own command.\n"
        "ENTRYPOINT []\n"
    )


def launcher_py(name: str) -> str:
    return f'"""Placeholder for the launcher\'s {name} (the sample has no inference server)."""\n'


# -- the chart ---------------------------------------------------------------------

CHART_YAML = """\
apiVersion: v2
name: fma-controllers
description: The controllers of the FMA-shaped sample (dual-pods controller, launcher populator).
type: application
version: 0.1.0
appVersion: "0.1.0"
keywords:
  - fma
  - sample
"""

HELMIGNORE = ".git/\n*.swp\n*~\n"

VALUES_YAML = f"""\
# Defaults of the sample's fma-controllers chart. A release writes global.imageRegistry and
# global.imageTag; everything else stays as written here.

global:
  # Where the controller images are: each is <imageRegistry>/<controller>:<imageTag>.
  imageRegistry: ghcr.io/llm-d-incubation/llm-d-fast-model-actuation

  # The controllers' image tag. A release puts its own tag here; "latest" only serves
  # an install straight from a checkout.
  imageTag: latest

  # A ClusterRole that may read Nodes, bound to the controllers' service account when
  # set. Empty: no binding.
  nodeViewClusterRole: ""

  # true on a local cluster whose nodes were loaded with the images: never pull them.
  local: false

  # The image of the Pod for looking at the dual-pods controller's coverage data.
  # Third-party: a release does not build it.
  coverdataInspectorImage: {INSPECTOR_IMAGE}

  # The metrics proxy's image, used when dualPodsController.secureMetrics is true. Third-party too.
  metricsProxyImage: {METRICS_PROXY_IMAGE}

dualPodsController:
  enabled: true
  # Log verbosity (-v).
  verbosity: 5
  # Pods with a sleeping inference server that one GPU may keep.
  sleeperLimit: 2
  # Ask each requester for its accelerator memory and log it.
  debugAcceleratorMemory: false
  # Serve the metrics through an authorizing proxy (a third-party sidecar) instead of in the clear.
  secureMetrics: false
  # Size of the volume that gathers coverage data (GOCOVERDIR).
  coverdataSize: 1Gi

launcherPopulator:
  enabled: true
  replicaCount: 1
  pullPolicy: IfNotPresent
  resources:
    limits:
      cpu: "2"
      memory: 2Gi
    requests:
      cpu: 100m
      memory: 128Mi
"""

HELPERS_TPL = """\
{{/* Prefix of every object's name. */}}
{{- define "fmac.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "fmac.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "component"). */}}
{{- define "fmac.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}
"""

DUAL_PODS_DEPLOYMENT = """\
{{- if .Values.dualPodsController.enabled }}
{{- $dpc := .Values.dualPodsController }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fmac.fullname" . }}-dual-pods-controller
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
    app.kubernetes.io/component: dual-pods-controller
spec:
  replicas: 1
  selector:
    matchLabels:
      {{- include "fmac.selector" (list . "dual-pods-controller") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fmac.selector" (list . "dual-pods-controller") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "fmac.fullname" . }}
      containers:
        - name: controller
          image: "{{ .Values.global.imageRegistry }}/dual-pods-controller:{{ .Values.global.imageTag }}"
          imagePullPolicy: {{ ternary "Never" "IfNotPresent" .Values.global.local }}
          command:
            - /ko-app/dual-pods-controller
            - -v={{ $dpc.verbosity }}
            - --namespace={{ .Release.Namespace }}
            - --sleeper-limit={{ $dpc.sleeperLimit }}
            - --debug-accelerator-memory={{ $dpc.debugAcceleratorMemory }}
          env:
            # A coverage-instrumented build leaves its counters here.
            - name: GOCOVERDIR
              value: /var/coverdata
          ports:
            - name: metrics
              containerPort: 8002
              protocol: TCP
          volumeMounts:
            - name: coverdata
              mountPath: /var/coverdata
        {{- if $dpc.secureMetrics }}
        - name: metrics-proxy
          image: "{{ .Values.global.metricsProxyImage }}"
          args:
            - --secure-listen-address=0.0.0.0:8443
            - --upstream=http://127.0.0.1:8002/
          ports:
            - name: https-metrics
              containerPort: 8443
              protocol: TCP
        {{- end }}
      volumes:
        - name: coverdata
          persistentVolumeClaim:
            claimName: {{ include "fmac.fullname" . }}-coverdata
{{- end }}
"""

COVERDATA_YAML = """\
{{- if .Values.dualPodsController.enabled }}
# The volume the dual-pods controller writes coverage data to.
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "fmac.fullname" . }}-coverdata
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: {{ .Values.dualPodsController.coverdataSize }}
---
# Scaled to 1 by whoever wants to read the coverage data; idle otherwise.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fmac.fullname" . }}-coverdata-inspector
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
    app.kubernetes.io/component: coverdata-inspector
spec:
  replicas: 0
  selector:
    matchLabels:
      {{- include "fmac.selector" (list . "coverdata-inspector") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fmac.selector" (list . "coverdata-inspector") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "fmac.fullname" . }}
      containers:
        - name: inspector
          image: "{{ .Values.global.coverdataInspectorImage }}"
          imagePullPolicy: IfNotPresent
          command: ["sleep", "infinity"]
          volumeMounts:
            - name: coverdata
              mountPath: /var/coverdata
      volumes:
        - name: coverdata
          persistentVolumeClaim:
            claimName: {{ include "fmac.fullname" . }}-coverdata
{{- end }}
"""

POPULATOR_DEPLOYMENT = """\
{{- if .Values.launcherPopulator.enabled }}
{{- $lp := .Values.launcherPopulator }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fmac.fullname" . }}-launcher-populator
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
    app.kubernetes.io/component: launcher-populator
spec:
  replicas: {{ $lp.replicaCount }}
  selector:
    matchLabels:
      {{- include "fmac.selector" (list . "launcher-populator") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fmac.selector" (list . "launcher-populator") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "fmac.fullname" . }}
      containers:
        - name: controller
          image: "{{ .Values.global.imageRegistry }}/launcher-populator:{{ .Values.global.imageTag }}"
          imagePullPolicy: {{ ternary "Never" $lp.pullPolicy .Values.global.local }}
          command:
            - /ko-app/launcher-populator
            - --namespace={{ .Release.Namespace }}
          resources:
            {{- toYaml $lp.resources | nindent 12 }}
{{- end }}
"""

ROLE_YAML = """\
# What both controllers may do in the release's namespace. Reading Nodes (cluster-wide) comes
# from the ClusterRole global.nodeViewClusterRole names (role-binding.yaml).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "fmac.fullname" . }}
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
rules:
  - apiGroups: ["fma-sample.example.invalid"]
    resources: ["launcherpolicies"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["pods", "pods/status"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
  - apiGroups: [""]
    resources: ["configmaps", "events"]
    verbs: ["get", "list", "watch", "create", "update", "patch"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update"]
"""

ROLE_BINDING_YAML = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "fmac.fullname" . }}
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "fmac.fullname" . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "fmac.fullname" . }}
    namespace: {{ .Release.Namespace }}
{{- with .Values.global.nodeViewClusterRole }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ include "fmac.fullname" $ }}-{{ $.Release.Namespace }}-node-view
  labels:
    {{- include "fmac.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ . }}
subjects:
  - kind: ServiceAccount
    name: {{ include "fmac.fullname" $ }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
"""

SERVICE_ACCOUNT_YAML = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "fmac.fullname" . }}
  labels:
    {{- include "fmac.labels" . | nindent 4 }}
"""

# The binding without the node-view part: the "forbidden-nodes" fault's chart.
ROLE_BINDING_WITHOUT_NODE_VIEW = ROLE_BINDING_YAML.split("{{- with .Values.global.nodeViewClusterRole }}",
                                                         maxsplit=1)[0]

CRDS_YAML = f"""\
# The sample's custom resources, applied before the chart is installed (the chart does not carry them).
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: launcherpolicies.{CRD_GROUP}
spec:
  group: {CRD_GROUP}
  names:
    kind: LauncherPolicy
    listKind: LauncherPolicyList
    plural: launcherpolicies
    singular: launcherpolicy
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          description: How many launcher Pods the launcher populator keeps, per accelerator type.
          type: object
          properties:
            spec:
              type: object
              required: ["launchers"]
              properties:
                acceleratorType:
                  type: string
                launchers:
                  type: integer
                  format: int32
                  minimum: 0
                  maximum: 16
"""

# The "invalid-policy" fault: a LauncherPolicy with more launchers than its schema allows.
INVALID_POLICY_YAML = f"""\
apiVersion: {CRD_GROUP}/v1alpha1
kind: LauncherPolicy
metadata:
  name: {{{{ include "fmac.fullname" . }}}}-default
  labels:
    {{{{- include "fmac.labels" . | nindent 4 }}}}
spec:
  acceleratorType: sample-gpu
  launchers: 99
"""

CHART = "charts/fma-controllers"
DUAL_PODS_TEMPLATE = f"{CHART}/templates/dual-pods-controller/deployment.yaml"
NOTE_GO = "pkg/buildinfo/note.go"
AFTER_TAG_LABEL = "    fma-sample.example.invalid/unreleased: \"true\"\n"


def fma_files(
    *, ko_base: str, builder_base: str, runtime_base: str, launcher_base: str, requester_builder: str = "busybox",
    proof_fault: str = "",
) -> dict[str, str]:
    """Every file of the sample at its tag, by path; ``proof_fault`` (one of :data:`PROOF_FAULTS`)
    makes a source that the proof on a Kubernetes API server fails."""
    if proof_fault and proof_fault not in PROOF_FAULTS:
        raise ValueError(f"proof_fault {proof_fault!r} is not one of {', '.join(PROOF_FAULTS)}")
    files = {
        "go.mod": GO_MOD,
        "pkg/buildinfo/buildinfo.go": BUILDINFO_GO,
        "pkg/incluster/incluster.go": INCLUSTER_GO,
        CRDS_FILE: CRDS_YAML,
        NOTE_GO: NOTE_AT_TAG,
        f"{GENERATED_DIR}/clientset/versioned/clientset.go": GENERATED_CLIENTSET_GO,
        f"{GENERATED_DIR}/listers/fma/v1alpha1/lister.go": GENERATED_LISTER_GO,
        "cmd/dual-pods-controller/main.go": DUAL_PODS_MAIN,
        "cmd/launcher-populator/main.go": POPULATOR_MAIN,
        "cmd/requester/main.go": REQUESTER_MAIN,
        ".ko.yaml": ko_yaml(ko_base),
        "dockerfiles/Dockerfile.requester": requester_dockerfile(builder_base, runtime_base, requester_builder),
        "dockerfiles/Dockerfile.launcher.benchmark": launcher_dockerfile(launcher_base),
        "inference_server/launcher/__init__.py": "",
        f"{CHART}/Chart.yaml": CHART_YAML,
        f"{CHART}/.helmignore": HELMIGNORE,
        f"{CHART}/values.yaml": VALUES_YAML,
        f"{CHART}/templates/_helpers.tpl": HELPERS_TPL,
        DUAL_PODS_TEMPLATE: DUAL_PODS_DEPLOYMENT,
        f"{CHART}/templates/dual-pods-controller/coverdata.yaml": COVERDATA_YAML,
        f"{CHART}/templates/launcher-populator/deployment.yaml": POPULATOR_DEPLOYMENT,
        f"{CHART}/templates/rbac/role.yaml": ROLE_YAML,
        f"{CHART}/templates/rbac/role-binding.yaml": (
            ROLE_BINDING_WITHOUT_NODE_VIEW if proof_fault == "forbidden-nodes" else ROLE_BINDING_YAML),
        f"{CHART}/templates/rbac/service-account.yaml": SERVICE_ACCOUNT_YAML,
    }
    if proof_fault == "invalid-policy":
        files[f"{CHART}/templates/launcher-populator/policy.yaml"] = INVALID_POLICY_YAML
    for name in LAUNCHER_FILES:
        files[f"inference_server/launcher/{name}"] = launcher_py(name)
    return files


def after_tag_files(dual_pods_template: str) -> dict[str, str]:
    """The files a commit after the tag changes: the dual-pods Deployment gets a label, and every
    program says it is unreleased work. A release that builds HEAD instead of the tag shows both."""
    marker = "    app.kubernetes.io/component: dual-pods-controller\nspec:\n"
    if marker in dual_pods_template:
        changed = dual_pods_template.replace(marker, marker.replace("spec:\n", AFTER_TAG_LABEL + "spec:\n"), 1)
    else:  # a test's mutate() rewrote the template: change it all the same
        changed = dual_pods_template + "# changed after the tag\n"
    return {DUAL_PODS_TEMPLATE: changed, NOTE_GO: NOTE_AFTER_TAG}
