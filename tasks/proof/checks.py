"""The proof's pure decisions: what a check is, which containers of an installed chart are the
release's and how Kubernetes would start each, what a container is given, what an API server's
refusal names, and the verdict on a container. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tasks.core.redact import redact
from tasks.run.result import PushedImage

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LAST_LINES = 6  # a failed container's output shown in its check
NODE_NAME = "fma-proof-node"  # what spec.nodeName reads as in a proof (no kubelet, no node)


@dataclass(frozen=True)
class ProofCheck:
    """One named result of the proof: a row of the smoke table.

    ``skipped``: the check could not run here (``detail`` says why, in one line); it never counts as
    passed. ``seconds``: how long the check took (for a container: how long it was watched)."""

    name: str
    passed: bool
    detail: str
    seconds: float = 0.0
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "skipped" if self.skipped else "passed" if self.passed else "failed"


def not_run(reason: str, name: str = "kubernetes") -> ProofCheck:
    """The one check of a proof that cannot run here."""
    return ProofCheck(name=name, passed=False, detail=f"not run: {reason}", skipped=True)


@dataclass(frozen=True)
class ContainerRun:
    """One container of a Deployment, as the proof starts it from its image."""

    deployment: str
    container: str
    image: str  # as the chart renders it
    namespace: str
    service_account: str
    command: tuple[str, ...] | None  # None: the image's entrypoint (Kubernetes' rule)
    args: tuple[str, ...] | None  # None: the image's CMD, when command is None too
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[str, ...] = ()  # paths of its volumeMounts: each gets an empty writable directory
    working_dir: str = ""
    token: bool = True  # automountServiceAccountToken
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the proof could not give as Kubernetes would

    @property
    def label(self) -> str:
        return f"{self.deployment}/{self.container}"


def images_to_run(pushed: Iterable[PushedImage]) -> dict[str, dict[str, str]]:
    """The proof's ``images`` from a release's pushed images: each tag as a chart renders it, with the
    reference by digest to run for each of its platforms (an index's platform manifests; a single-platform
    image its own, ``linux/amd64`` when it says no platform)."""
    found: dict[str, dict[str, str]] = {}
    for image in pushed:
        repository = image.ref.rsplit("@", 1)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        manifests = image.platforms or (image,)
        found[image.ref] = {(m.platform or "linux/amd64"): f"{repository}@{m.digest}" for m in manifests}
    return found


def manifest_docs(manifests: str | Mapping[str, str]) -> list[dict[str, Any]]:
    """Every object of a rendered manifest (one text, or Helm's templates by name), in order."""
    texts = [manifests] if isinstance(manifests, str) else list(manifests.values())
    return [doc for text in texts for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc]


def _strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values: a defined variable is
    replaced, an undefined one is left as written, ``$$`` is a literal ``$``."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def _env(spec: Sequence[Mapping[str, Any]], *, namespace: str, pod: str, service_account: str
         ) -> tuple[dict[str, str], list[str]]:
    """A container's env as Kubernetes gives it, for what a proof can give; notes on the rest."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod, "spec.serviceAccountName": service_account,
              "spec.nodeName": NODE_NAME}
    env: dict[str, str] = {}
    notes: list[str] = []
    for item in spec:
        name = str(item.get("name", ""))
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item.get("valueFrom") or {}
        path = str((source.get("fieldRef") or {}).get("fieldPath", ""))
        if path in fields:
            env[name] = fields[path]
        else:
            notes.append(f"env {name} ({next(iter(source), 'valueFrom')}) not given")
    return env, notes


def release_containers(docs: Iterable[Mapping[str, Any]], images: Collection[str], namespace: str
                       ) -> list[ContainerRun]:
    """Each container of each Deployment (with replicas) whose image is one of ``images``, as its
    Pod would run it: command and args, env, service account, mounts."""
    runs: list[ContainerRun] = []
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        spec = doc.get("spec") or {}
        if spec.get("replicas", 1) == 0:
            continue
        name = str((doc.get("metadata") or {}).get("name", ""))
        ns = str((doc.get("metadata") or {}).get("namespace") or namespace)
        pod = (spec.get("template") or {}).get("spec") or {}
        account = str(pod.get("serviceAccountName") or pod.get("serviceAccount") or "default")
        automount = pod.get("automountServiceAccountToken", True) is not False
        for container in pod.get("containers") or []:
            image = str(container.get("image", ""))
            if image not in images:
                continue
            env, notes = _env(container.get("env") or [], namespace=ns, pod=f"{name}-proof", service_account=account)
            command, args = _strings(container.get("command")), _strings(container.get("args"))
            runs.append(ContainerRun(
                deployment=name, container=str(container.get("name", "")), image=image, namespace=ns,
                service_account=account,
                command=None if command is None else tuple(expand(c, env) for c in command),
                args=None if args is None else tuple(expand(a, env) for a in args),
                env=tuple(env.items()),
                mounts=tuple(str(m.get("mountPath")) for m in container.get("volumeMounts") or []
                             if m.get("mountPath") and not str(m.get("mountPath")).startswith(SERVICE_ACCOUNT_DIR)),
                working_dir=str(container.get("workingDir") or ""),
                token=automount and container.get("automountServiceAccountToken", True) is not False,
                notes=tuple(notes),
            ))
    return runs


def kubernetes_env(host: str, port: int) -> dict[str, str]:
    """The variables Kubernetes gives every container for the API server (what in-cluster clients read)."""
    return {
        "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}", f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port), f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def service_account_files(token: str, ca_pem: bytes, namespace: str) -> dict[str, bytes]:
    """The files Kubernetes mounts at :data:`SERVICE_ACCOUNT_DIR`."""
    return {"token": token.encode(), "ca.crt": ca_pem, "namespace": namespace.encode()}


# Helm's own words around the server's: "... failed to create resource: <the server's message>".
_SERVER_SAYS = re.compile(r"(?:failed to create resource|failed to create|unable to build kubernetes objects"
                          r"[^:]*|error validating[^:]*):\s*", re.IGNORECASE)
# How the server names an object: `Kind.group "name" is invalid`, `kinds.group "name" is forbidden`, ...
_NAMED = re.compile(r'(?P<kind>[A-Za-z][\w.-]*) "(?P<name>[^"]+)" '
                    r"(?:is )?(?P<why>(?:invalid|forbidden|already exists).*)")
_NO_KIND = re.compile(r'no matches for kind "(?P<kind>[^"]+)"')
# Helm 4 applies server-side: "server-side apply failed for object NS/NAME GROUP/VERSION, Kind=KIND: <why>".
_APPLIED = re.compile(r"apply failed for object (?:(?P<ns>[^/\s]+)/)?(?P<name>\S+) (?P<gv>\S+), Kind=(?P<kind>\w+):\s*"
                      r"(?:failed to create typed patch object \([^)]*\):\s*)?(?P<why>.*)")


def refusal(error: str, docs: Iterable[Mapping[str, Any]] = ()) -> tuple[str, str]:
    """``(object, reason)`` of an install the API server refused, from Helm's error text: the object
    as the server names it (``Kind.group "name"``), else the rendered object whose kind the server
    did not know, else ``""``; the reason is the server's own words, on one line, masked."""
    text = " ".join(redact(error).split())
    found = _SERVER_SAYS.split(text)
    reason = found[-1] if len(found) > 1 else text
    named = _NAMED.search(text)
    if named:
        return f'{named.group("kind")} "{named.group("name")}"', named.group("why")
    applied = _APPLIED.search(text)
    if applied:
        return f'{applied.group("kind")} "{applied.group("name")}" ({applied.group("gv")})', applied.group("why")
    missing = _NO_KIND.search(text)
    if missing:
        kind = missing.group("kind")
        names = [str((d.get("metadata") or {}).get("name", "")) for d in docs if d.get("kind") == kind]
        return (f'{kind} "{names[0]}"' if len(names) == 1 else kind), reason
    return "", reason


def last_lines(output: str, count: int = LAST_LINES) -> str:
    """The last ``count`` lines of a container's output that say something, joined by `` | ``, masked."""
    lines = [line.strip() for line in redact(output).splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def container_verdict(*, running: bool, exit_code: int | None, watched: float, output: str,
                      oom: bool = False) -> tuple[bool, str]:
    """``(passed, detail)`` of a container watched for ``watched`` seconds: running at the end passes
    (with the last thing it said); any exit fails with its code and its last lines (a controller that
    stops is a controller that does not work, whatever its code)."""
    if running:
        said = last_lines(output, 1)
        return True, f"running {watched:.0f} s" + (f"; last said: {said}" if said else "")
    said = last_lines(output) or "no output"
    why = "killed: out of memory" if oom else f"exited with code {exit_code}"
    return False, f"{why} after {watched:.1f} s: {said}"


@dataclass(frozen=True)
class Proof:
    """A staged release's proof: every check it ran (the container starts, the Kubernetes install and its
    controllers), in order. It passes when at least one check ran and every check that ran passed; a check
    that could not run here is listed as skipped, never counted as passed."""

    checks: tuple[ProofCheck, ...] = ()

    @classmethod
    def of(cls, checks: Iterable[ProofCheck]) -> Proof:
        return cls(tuple(checks))

    @property
    def ran(self) -> tuple[ProofCheck, ...]:
        return tuple(c for c in self.checks if not c.skipped)

    @property
    def passed(self) -> bool:
        return bool(self.ran) and all(c.passed for c in self.ran)

    @property
    def failures(self) -> tuple[ProofCheck, ...]:
        return tuple(c for c in self.ran if not c.passed)

    def failure_line(self) -> str:
        """One line naming every failed check (or that the proof checked nothing)."""
        if not self.ran:
            return "the proof checked nothing: the release has no chart and no image to start"
        # Two renders of a chart (a values switch) may start the same container the same way: said once.
        return "; ".join(dict.fromkeys(f"{c.name}: {c.detail}" for c in self.failures))

    def table(self) -> str:
        """The proof as a markdown table (the summary, the Prefect artifact)."""
        rows = ["| check | result | seen | seconds |", "| --- | --- | --- | ---: |"]
        for c in self.checks:
            seen = c.detail.replace("|", "\\|").replace("\n", " ")
            verdict = "**failed**" if c.verdict == "failed" else c.verdict
            rows.append(f"| {c.name} | {verdict} | {seen} | {c.seconds:.1f} |")
        return "\n".join(rows)
