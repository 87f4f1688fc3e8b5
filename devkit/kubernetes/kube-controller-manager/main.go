// Command kube-controller-manager is upstream's controller manager, linked from k8s.io/kubernetes
// at the version go.mod pins: it makes ReplicaSets of Deployments, namespaces' service accounts
// and their deletion for the proof's API server.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
