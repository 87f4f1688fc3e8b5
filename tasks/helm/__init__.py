"""Helm charts: the values edit, staging, lint, render, the images a chart renders (the release's
own, or external), packaging, and how a packaged chart stands against its registry.

Imports ``tasks.core``, ``tasks.oci``, ``tasks.run`` and ``tasks.builders``' rooms below it; never a step.
"""
