// Command etcd is upstream's etcd server at the version go.mod pins (the one k8s.io/kubernetes
// requires), the API server's storage in fma-release's proof.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
