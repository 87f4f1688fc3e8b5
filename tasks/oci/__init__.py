"""OCI images and registries, as a library: image and chart references, platforms and image indexes,
the registry HTTP API (with credentials bound by :mod:`tasks.oci.auth`), and OCI image layouts.

Knows nothing of a release. Imports ``tasks.core`` only.
"""
