"""Builders: each turns an image build into an image the engine (or an OCI layout) holds.

:mod:`tasks.builders.buildkit` builds Dockerfiles with the engine's BuildKit through a docker CLI,
as upstream's ``docker buildx build`` does.
"""
