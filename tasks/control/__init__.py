"""The control plane around a release: one run per tag (global concurrency and tag slots with their
holder records), what a Prefect server outage does, release records, and the preflight checks.

Imports the rooms below it (core, oci, run, builders, helm, supplychain); never a step.
"""
