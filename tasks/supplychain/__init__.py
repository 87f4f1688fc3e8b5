"""The supply chain: cosign and syft (the one place they run), what gets signed and the SLSA
provenance predicate, whether a run signs and its key, and ``fma-release verify``.

Imports ``tasks.core``, ``tasks.oci``, ``tasks.run``, ``tasks.builders`` and ``tasks.helm``; never a step.
"""
