"""The foundation every room stands on: the error types, secret masking, the one place a subprocess
runs (``cmd``), where the pinned tools are (``tools``), progress reports and a long step's pulse, the
status enum and this project's own root and version.

Imports nothing of the project outside ``tasks.core``.
"""
