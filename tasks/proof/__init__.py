"""The proof on a real Kubernetes API server: a staged chart installs, and its controllers run against it.

``checks``: the pure decisions (which containers of a rendered chart are the release's and how each
runs, what Kubernetes would give a container, what an API server's refusal names, the verdict on a
container); ``pki``: the certificates and keys of a local server; ``cluster``: etcd, kube-apiserver and
kube-controller-manager (built from source by scripts/kube.sh into .local/kube/bin) started and stopped
by PID; ``kubeapi``: a small client of the API server; ``kubernetes``: the check itself
(:func:`tasks.proof.kubernetes.prove_chart`), which returns named checks.

Imports ``tasks.core``, ``tasks.oci``, ``tasks.run`` and ``tasks.helm``; never a step or a flow.
"""
