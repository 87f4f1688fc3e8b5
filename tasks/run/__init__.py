"""The run's own types: what was asked (``context.ReleaseRequest``), the environment read once
(``settings``), the release config, tags, the image plan, Docker engines a run owns, the facts a run
learns (``facts``), retry policy and results, and the run's context built from them.

Imports ``tasks.core`` and ``tasks.oci``; never a builder, a step or the control plane.
"""
