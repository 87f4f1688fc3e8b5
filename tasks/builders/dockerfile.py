"""The base images of a Dockerfile, and a copy of it whose ``FROM`` lines name them by digest (pure).

A build for one platform must start from that platform's base image. The legacy builder takes
``FROM`` images from the engine's local tags, which hold one platform at a time, so two
platforms building at once from one tag would race. Instead each base is resolved (through the
registry API) to the platform's manifest digest, pulled by digest, and the build reads a staging
copy of the Dockerfile whose ``FROM`` names that digest; the checkout is never edited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_VAR = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")
_FLAG = re.compile(r"--(\w+)=(\S+)")
_DIRECTIVE = re.compile(r"#\s*([a-z]+)\s*=\s*(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class BaseImage:
    """One ``FROM`` of a Dockerfile that names an image (not ``scratch``, not an earlier stage)."""

    line: int  # index of the FROM's first physical line
    end: int  # index after its last physical line (continuations)
    image: str  # the image as written, variables expanded
    platform: str  # the FROM's --platform, expanded; "" for the build's own platform
    stage: str  # "AS name", or ""


def expand(word: str, variables: Mapping[str, str]) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alt}`` as the Dockerfile parser expands them."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = variables.get(name, "")
        if match.group(2) == "-":
            return value or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value

    return _VAR.sub(one, word)


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """``(first, after_last, joined)`` for each instruction; continuation lines joined, comments skipped."""
    lines = text.splitlines()
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(lines):
        start, parts = i, []
        while True:
            line = lines[i]
            i += 1
            if line.rstrip().endswith("\\") and i < len(lines):
                parts.append(line.rstrip()[:-1])
                continue
            parts.append(line)
            break
        joined = " ".join(p.strip() for p in parts).strip()
        if joined and not joined.startswith("#"):
            found.append((start, i, joined))
    return found


def base_images(text: str, build_args: Mapping[str, str]) -> list[BaseImage]:
    """Every ``FROM`` that names an image, with global ``ARG`` defaults (overridden by ``build_args``)
    expanded; ``scratch`` and references to earlier stages are left out."""
    variables: dict[str, str] = dict(build_args)
    stages: set[str] = set()
    seen_from = False
    bases = []
    for start, end, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not seen_from:
            name, eq, default = rest.strip().partition("=")
            if name not in build_args and eq:
                variables[name] = expand(default.strip().strip('"'), variables)
            continue
        if keyword != "FROM":
            continue
        seen_from = True
        words = rest.split()
        flags = {}
        while words and words[0].startswith("--"):
            flag = _FLAG.fullmatch(words.pop(0))
            if flag:
                flags[flag.group(1).lower()] = expand(flag.group(2), variables)
        if not words:
            continue
        image = expand(words[0], variables)
        stage = " ".join(words[1:])
        earlier = image.lower() in stages  # FROM build: a stage of this Dockerfile, no image
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() == "scratch" or earlier:
            continue
        bases.append(BaseImage(line=start, end=end, image=image, platform=flags.get("platform", ""), stage=stage))
    return bases


def pin_bases(text: str, pins: Mapping[int, str]) -> str:
    """``text`` with the FROM starting at each line index of ``pins`` reading ``FROM <pin> [AS name]``
    (a pin is the image by digest, after the expanded ``--platform=`` flag if the FROM had one). Every
    other line keeps its number, so a builder's error points at the line of the original file."""
    lines = text.splitlines()
    ends = {start: end for start, end, _ in _logical_lines(text)}
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i not in pins:
            out.append(lines[i])
            i += 1
            continue
        words = " ".join(p.rstrip().removesuffix("\\") for p in lines[i:ends[i]]).split()[1:]
        rest = [w for w in words if not w.startswith("--")][1:]
        out.append(" ".join(["FROM", pins[i], *rest]))
        out += [""] * (ends[i] - i - 1)  # a FROM of several lines keeps them: later line numbers still match
        i = ends[i]
    return "\n".join(out) + "\n"


def declared_args(text: str) -> set[str]:
    """The names every ``ARG`` of the Dockerfile declares (a build arg nothing declares only draws a warning)."""
    names: set[str] = set()
    for _, _, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "ARG":
            names.update(word.partition("=")[0] for word in rest.split())
    return names


def labelled_dockerfile(text: str, labels: Mapping[str, str]) -> str:
    """``text`` with one ``LABEL`` line for all ``labels`` appended (it applies to the final stage).

    Values are double-quoted with the Dockerfile's escape character (``\\`` unless an ``# escape=``
    directive says otherwise) before quotes, escapes and ``$`` (LABEL expands variables).
    """
    if not labels:
        return text
    escape = "\\"
    for line in text.splitlines():  # parser directives (# syntax=, # escape=) come before anything else
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is None:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)[0]

    def quoted(value: str) -> str:
        for special in (escape, '"', "$"):
            value = value.replace(special, escape + special)
        return '"' + value.replace("\n", " ") + '"'

    pairs = " ".join(f"{quoted(key)}={quoted(value)}" for key, value in labels.items())
    return text.rstrip("\n") + "\n" + f"LABEL {pairs}\n"


_STEP = re.compile(r"\[(?:(?P<stage>[^\]\s]+) )?(?P<n>\d+)/(?P<m>\d+)\] (?P<instruction>.+)", re.DOTALL)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _as_shown(instruction: str) -> re.Pattern[str]:
    """What BuildKit may show for a Dockerfile instruction: its words, each variable either as written or
    expanded (BuildKit expands build args in some step names: ``RUN ["sh", "-c", "echo $TARGETOS"]``)."""
    flat, parts, at = _flat(instruction), [], 0
    for variable in _VAR.finditer(flat):
        parts += [re.escape(flat[at:variable.start()]), f"(?:{re.escape(variable.group(0))}|.*?)"]
        at = variable.end()
    parts.append(re.escape(flat[at:]))
    return re.compile("".join(parts), re.DOTALL)


def instruction_line(text: str, step: str) -> int:
    """The line (1-based) of the Dockerfile ``text`` where the instruction of a BuildKit step starts
    (``[builder 3/5] RUN go build``: stage ``builder``; ``[stage-1 2/3]``: the second FROM's stage;
    ``[2/3]``: any stage), or 0 when it cannot be told (a FROM, whose image BuildKit names pinned; an
    instruction that matches twice in that stage; a step of another form). Whitespace and line
    continuations do not count; a variable matches itself or any expansion of it."""
    found = _STEP.fullmatch(step.strip())
    if found is None:
        return 0
    shown = _flat(found.group("instruction"))
    stage_named = (found.group("stage") or "").lower()
    stage = -1
    names: dict[int, str] = {}
    matches: list[int] = []
    for start, _end, line in _logical_lines(text):
        keyword = line.split(" ", 1)[0].upper()
        if keyword == "FROM":
            stage += 1
            words = line.split()
            if len(words) >= 4 and words[-2].upper() == "AS":
                names[stage] = words[-1].lower()
            continue
        if stage_named and stage_named not in (names.get(stage), f"stage-{stage}"):
            continue
        if _as_shown(line).fullmatch(shown):
            matches.append(start + 1)
    return matches[0] if len(matches) == 1 else 0
