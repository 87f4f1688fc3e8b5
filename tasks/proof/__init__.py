"""The proof of a staged release: checks run against what a stage registry holds, before anything is
promoted. Each check has a name, a result and what it saw (:mod:`tasks.proof.checks`); the container-start
proof (:mod:`tasks.proof.containers` decides, :mod:`tasks.proof.smoke` acts) starts every container a
released chart runs, from its staged image, on every platform.

Imports the rooms below it (core, oci, run, builders, helm, supplychain); never a step.
"""
