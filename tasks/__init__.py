"""The release's steps and the rooms they are built from.

A module directly under tasks/ is a step: it defines the Prefect tasks of one box of the process
(``source``: checkout at the tag; ``build``; ``push``; ``index``; ``charts``: package and push;
``signing``; ``summary``). The steps use the rooms below them, lowest first:

- ``core``: errors, masking, the one subprocess choke point, tools, progress, status;
- ``oci``: references, platforms, the registry API, credentials, OCI layouts;
- ``run``: the run's own types: request and context, settings, config, tags, plan, facts, result, retry;
- ``builders``: ko, BuildKit, the legacy builder, and the readers of Dockerfiles, ``.ko.yaml`` and bases;
- ``helm``: values edit, packaging, rendered images;
- ``supplychain``: cosign, provenance, the signer, verify;
- ``control``: tag slots, concurrency, outage, release records, the preflight;
- ``forge``: the GitHub release and tags.

A room imports only itself and rooms before it; steps import any room; flows/ imports anything.
tests/unit/test_rooms.py fails on an upward import or a cycle, TYPE_CHECKING imports included.
"""
