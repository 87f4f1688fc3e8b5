// Command kube-apiserver is upstream's API server, linked from k8s.io/kubernetes at the version
// go.mod pins, for fma-release's proof on a real Kubernetes API server.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
