// Command fma-sbomd makes SPDX JSON SBOMs of registry images with syft's library, for as long as a
// release runs.
//
// `syft scan` builds its license matcher from nothing on every start: about a second of CPU before
// the first file is read, paid once per image and platform, on the critical path of each image's
// chain (its SBOM is attested after it is pushed). fma-sbomd builds it once, as it starts (while the
// release's images still build), and then scans each image in tens of milliseconds.
//
// Protocol: one JSON request per line on stdin, one JSON answer per line on stdout, matched by "id".
// Requests are served at once, each on its own goroutine. The process ends when stdin closes, so it
// never outlives the release that started it.
//
//	{"id": "1", "image": "host/repo@sha256:...", "out": "/path/sbom.spdx.json",
//	 "http": false, "insecure": false, "ca": "/path/ca.pem", "username": "...", "password": "..."}
//	{"id": "1"}                       the SBOM is in "out"
//	{"id": "1", "error": "one line"}  it is not
//
// Credentials come only in a request and are used only for that request's registry host; with
// none, the registry is read anonymously (never with a docker config's credentials).
// `fma-sbomd version` prints the build stamp and the syft version it embeds.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/anchore/stereoscope"
	"github.com/anchore/stereoscope/pkg/image"
	"github.com/anchore/syft/syft"
	"github.com/anchore/syft/syft/cataloging"
	"github.com/anchore/syft/syft/format/spdxjson"
	"github.com/anchore/syft/syft/sbom"
	"github.com/google/go-containerregistry/pkg/authn"
	_ "modernc.org/sqlite" // syft reads newer RPM databases with it, as the syft command does
)

// build is the hash of this program's sources, set by scripts/tools.sh (-ldflags -X main.build=...).
var build = "dev"

const syftModule = "github.com/anchore/syft"

type request struct {
	ID       string `json:"id"`
	Image    string `json:"image"`
	Out      string `json:"out"`
	HTTP     bool   `json:"http"`
	Insecure bool   `json:"insecure"`
	CA       string `json:"ca"`
	Username string `json:"username"`
	Password string `json:"password"`
}

type answer struct {
	ID    string `json:"id"`
	Error string `json:"error,omitempty"`
}

// anonymous is the keychain when a request names no credentials: no docker config is ever read.
type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

func syftVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == syftModule {
				return dep.Version
			}
		}
	}
	return "unknown"
}

type scanner struct {
	ctx     context.Context
	encoder sbom.FormatEncoder
	version string
}

func newScanner() (*scanner, error) {
	ctx, err := syft.SetContextLicenseScanner(context.Background(), cataloging.DefaultLicenseConfig())
	if err != nil {
		return nil, err
	}
	encoder, err := spdxjson.NewFormatEncoderWithConfig(spdxjson.DefaultEncoderConfig())
	if err != nil {
		return nil, err
	}
	return &scanner{ctx: ctx, encoder: encoder, version: syftVersion()}, nil
}

func (s *scanner) scan(r request) error {
	if r.Image == "" || r.Out == "" {
		return errors.New(`a request needs "image" and "out"`)
	}
	options := &image.RegistryOptions{
		InsecureUseHTTP:       r.HTTP,
		InsecureSkipTLSVerify: r.Insecure,
		CAFileOrDir:           r.CA,
		Keychain:              anonymous{},
	}
	if r.Username != "" {
		host := strings.SplitN(r.Image, "/", 2)[0]
		options.Credentials = []image.RegistryCredentials{{Authority: host, Username: r.Username, Password: r.Password}}
	}
	config := syft.DefaultGetSourceConfig().WithRegistryOptions(options).WithSources("registry")
	src, err := syft.GetSource(s.ctx, r.Image, config)
	if err != nil {
		return err
	}
	defer src.Close()
	made, err := syft.CreateSBOM(s.ctx, src, syft.DefaultCreateSBOMConfig().WithTool("syft", strings.TrimPrefix(s.version, "v")))
	if err != nil {
		return err
	}
	partial := r.Out + ".partial"
	file, err := os.OpenFile(partial, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := s.encoder.Encode(file, *made); err != nil {
		file.Close()
		os.Remove(partial)
		return err
	}
	if err := file.Close(); err != nil {
		os.Remove(partial)
		return err
	}
	return os.Rename(partial, filepath.Clean(r.Out))
}

// oneLine is an error as one line: syft's errors can wrap several.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("fma-sbomd %s syft %s\n", build, syftVersion())
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: fma-sbomd [version] (requests are JSON lines on stdin)")
		os.Exit(2)
	}
	defer stereoscope.Cleanup()
	var out sync.Mutex
	say := func(a answer) {
		line, _ := json.Marshal(a)
		out.Lock()
		defer out.Unlock()
		os.Stdout.Write(append(line, '\n'))
	}
	ready := make(chan struct{})
	var s *scanner
	var startErr error
	go func() { // the license matcher is built while the first requests are read
		s, startErr = newScanner()
		close(ready)
	}()
	var running sync.WaitGroup
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 64*1024), 1024*1024)
	for lines.Scan() {
		var r request
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			say(answer{Error: "a request is not JSON: " + oneLine(err)})
			continue
		}
		running.Add(1)
		go func() {
			defer running.Done()
			<-ready
			if startErr != nil {
				say(answer{ID: r.ID, Error: "syft could not start: " + oneLine(startErr)})
				return
			}
			if err := s.scan(r); err != nil {
				say(answer{ID: r.ID, Error: oneLine(err)})
				return
			}
			say(answer{ID: r.ID})
		}()
	}
	running.Wait()
}
