"""The proof of a staged release: checks run against what a stage registry holds, before anything is
promoted. Each check has a name, a result and what it saw (``checks``: :class:`~tasks.proof.checks.ProofCheck`,
and the :class:`~tasks.proof.checks.Proof` of a run).

The container-start proof: ``containers`` decides which containers a released chart runs from the
release's images and how a start is judged; ``smoke`` lints and renders each staged chart (defaults and
each values switch) and starts every such container from its staged image, on every platform.

The proof on a real Kubernetes API server: ``checks`` also holds its pure decisions (which containers of
a rendered chart are the release's and how each runs, what Kubernetes would give a container, what an API
server's refusal names, the verdict on a container); ``pki``: the certificates and keys of a local server;
``cluster``: etcd, kube-apiserver and kube-controller-manager (built from source by scripts/kube.sh into
.local/kube/bin) started and stopped by PID; ``kubeapi``: a small client of the API server;
``kubernetes``: the check itself (:func:`tasks.proof.kubernetes.prove_on_kubernetes`).

Imports ``tasks.core``, ``tasks.oci``, ``tasks.run``, ``tasks.builders`` and ``tasks.helm``; never a step
or a flow.
"""
