"""What the container-start proof starts, and how it judges what it saw (pure).

Every container of a released chart whose image is one of the release's is started from its staged
image, on every platform the image has, with the chart's own ``command``, ``args`` and plain ``env``
(values, not references to secrets or fields). An image that no chart runs (FMA's requester and
launcher) is started once per platform with its own entrypoint, or with the release config's
``smoke: {command: [...]}``. The executable must start: a missing file, an exec format error, a
permission refused, or exit 126/127 fail the check; running past the bound, or ending with the
program's own error, pass it. Because binfmt_misc picks an interpreter by the binary's own ELF header,
an amd64 binary in an arm64 image would start natively on an amd64 host; so the executable's ELF
machine is also compared with the platform.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class ContainerToStart:
    image: str  # the release image's name
    where: str  # "chart fma-controllers, Deployment fma-dpc, container controller"; "no chart runs it"
    command: tuple[str, ...] | None = None  # None: the image's entrypoint
    args: tuple[str, ...] | None = None  # None: the image's cmd (when command is None too)
    env: tuple[tuple[str, str], ...] = ()


def _pod_specs(doc: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, name, pod spec) of a rendered object that runs pods."""
    if not isinstance(doc, dict):
        return
    kind, name = str(doc.get("kind", "")), str((doc.get("metadata") or {}).get("name", ""))
    spec = doc.get("spec") or {}
    if kind == "Pod":
        yield kind, name, spec
    elif kind == "CronJob":
        yield kind, name, (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    elif isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        yield kind, name, spec["template"].get("spec") or {}


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(str(v) for v in value)


def chart_containers(
    chart: str, manifests: Mapping[str, str], release_refs: Mapping[str, str],
) -> list[ContainerToStart]:
    """The containers of rendered ``manifests`` whose image is one of ``release_refs`` (rendered reference ->
    image name), each once."""
    found: dict[tuple[object, ...], ContainerToStart] = {}
    for text in manifests.values():
        for doc in yaml.safe_load_all(text):
            for kind, name, pod in _pod_specs(doc):
                for key in ("initContainers", "containers"):
                    for container in pod.get(key) or []:
                        image = release_refs.get(str(container.get("image", "")))
                        if image is None:
                            continue
                        env = tuple((str(e["name"]), str(e["value"])) for e in container.get("env") or []
                                    if isinstance(e, dict) and "name" in e and "value" in e)
                        start = ContainerToStart(
                            image=image, where=f"chart {chart}, {kind} {name}, container {container.get('name', '?')}",
                            command=_strings(container.get("command")), args=_strings(container.get("args")), env=env)
                        found.setdefault((image, start.command, start.args, start.env), start)
    return list(found.values())


def unrun_images(images: Iterable[str], run_by_charts: Iterable[ContainerToStart],
                 smoke: Mapping[str, Sequence[str]]) -> list[ContainerToStart]:
    """A start for each release image no chart runs: its entrypoint, or the config's smoke command."""
    started = {c.image for c in run_by_charts}
    return [ContainerToStart(image=name, where="no chart runs it",
                             command=tuple(smoke[name]) if smoke.get(name) else None)
            for name in images if name not in started]


_NOT_STARTED = (
    (re.compile(r"exec format error", re.I), "exec format error"),
    (re.compile(r"executable file not found|no such file or directory", re.I), "no such file"),
    (re.compile(r"permission denied", re.I), "permission denied"),
)


@dataclass(frozen=True)
class Outcome:
    """What a start showed: the exit code (None: still running at the bound), the first lines of output,
    and an error the engine gave when it could not start the process."""

    exit_code: int | None
    output: str = ""
    start_error: str = ""


def first_lines(text: str, n: int = 3, width: int = 200) -> str:
    lines = [line.strip()[:width] for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:n])


def judge_start(outcome: Outcome, bound: float) -> tuple[bool, str]:
    """Whether the executable started, and the words for the table."""
    seen = outcome.start_error or outcome.output
    if outcome.start_error or outcome.exit_code in (126, 127):
        for pattern, words in _NOT_STARTED:
            if pattern.search(seen):
                said = first_lines(seen)
                return False, said if said.lower().startswith(words) else f"{words}: {said}"
        return False, f"did not start (exit {outcome.exit_code}): {first_lines(seen) or 'no output'}"
    if outcome.exit_code is None:
        return True, f"running after {bound:g} s"
    if outcome.exit_code == 0:
        return True, "started and exited 0"
    for pattern, words in _NOT_STARTED[:1]:
        if pattern.search(outcome.output):
            return False, f"{words}: {first_lines(outcome.output)}"
    return True, f"started; exit {outcome.exit_code} (its own error): {first_lines(outcome.output) or 'no output'}"


# ELF e_machine values of the platforms a release builds.
_MACHINES = {62: "amd64", 183: "arm64", 3: "386", 40: "arm", 21: "ppc64le", 22: "s390x", 243: "riscv64"}


def elf_architecture(head: bytes) -> str | None:
    """The architecture of an ELF executable from its first 20 bytes; None when it is not ELF (a script)."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _MACHINES.get(machine, f"machine {machine}")


def architecture_mismatch(executable: str, head: bytes, platform: str) -> str | None:
    """Why ``executable`` cannot run natively on ``platform`` (pure), or None."""
    built = elf_architecture(head)
    wanted = platform.split("/")[1] if "/" in platform else platform
    if built is None or built == wanted:
        return None
    return f"exec format error: {executable} is built for linux/{built}, the image is {platform}"
