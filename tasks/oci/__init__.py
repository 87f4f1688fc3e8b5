"""OCI images and registries, as a library: image and chart references, platforms and image indexes,
the registry HTTP API (with credentials bound by :mod:`tasks.oci.auth`), OCI image layouts, and an
engine's saved image made a layout (:mod:`tasks.oci.archive`).

Knows nothing of a release. Imports ``tasks.core`` only.
"""
