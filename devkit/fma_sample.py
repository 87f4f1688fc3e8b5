"""A sample source shaped like Fast Model Actuation at v0.6.4, for the demo and the main integration test.

``make_fma_source`` writes the tree of devkit/fma_files.py as a git repository: one commit, an
annotated tag, then one more commit that changes the chart's templates and a Go file, so a
release that builds HEAD instead of the tag shows. Its FROM lines and .ko.yaml point at bases in
a local registry (``push_fma_bases``), each a linux/amd64 + linux/arm64 index of a static
busybox: no public image can be pulled here.

``python -m devkit.fma_sample DIR REGISTRY [TAG]`` pushes the bases, makes ``DIR/source`` and
and prints ``source=... tag_commit=... config=...`` for a shell to eval.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devkit.fma_files import DUAL_PODS_TEMPLATE, REQUESTER_BUILDERS, after_tag_files, fma_files
from devkit.go_builder import publish_go_builder
from devkit.multiarch import busybox_index
from tasks.run.config import DEFAULT_CONFIG
from tasks.run.engines import Engines
from tasks.run.settings import Settings

# Where each base goes under the registry: named like the public images FMA starts from.
BASE_NAMES = {
    "static": ("chainguard/static", "latest"),  # ko's base (.ko.yaml, by digest)
    "builder": ("sample/build-tools", "1"),  # the requester's builder stage (busybox)
    "runtime": ("nvidia/cuda", "12.8.0-base-sample"),  # the requester's final stage
    "launcher": ("vllm/vllm-openai", "v0.0.0-sample"),  # the launcher's BASE_IMAGE
}

BASE_LABEL = "fma-sample.base"  # which base an image is, or was built FROM: static, builder, runtime, launcher


@dataclass(frozen=True)
class BaseImage:
    ref: str  # <registry>/<name>:<tag>
    digest: str  # of the tag's manifest (an index for the busybox bases)

    @property
    def pinned(self) -> str:
        """``<registry>/<name>@<digest>``: the reference by digest alone."""
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"


@dataclass(frozen=True)
class FmaBases:
    static: BaseImage
    builder: BaseImage
    runtime: BaseImage
    launcher: BaseImage
    go_builder: BaseImage | None = None  # a Go toolchain (linux/amd64), for requester_builder="go"


@dataclass(frozen=True)
class FmaSample:
    path: Path
    tag: str
    tag_commit: str
    head_commit: str
    config: Path  # the project's default release config (release.yaml), which releases it


def push_fma_bases(registry: str, *, go_builder: bool = False) -> FmaBases:
    """Push every base the sample's FROM lines and .ko.yaml name to ``registry``, each a
    linux/amd64 + linux/arm64 index; with ``go_builder`` also the Go toolchain image."""
    found = {}
    for role, (name, tag) in BASE_NAMES.items():
        pushed = busybox_index(registry, name=name, tag=tag, labels={BASE_LABEL: role})
        found[role] = BaseImage(ref=pushed.ref, digest=pushed.digest)
    go = None
    if go_builder:
        with Engines(Settings.from_env().docker_host).client() as client:
            ref, digest = publish_go_builder(client, registry)
        go = BaseImage(ref=ref, digest=digest)
    return FmaBases(go_builder=go, **found)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "FMA Sample", "GIT_AUTHOR_EMAIL": "sample@example.invalid",
        "GIT_COMMITTER_NAME": "FMA Sample", "GIT_COMMITTER_EMAIL": "sample@example.invalid",
    }
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def _write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def make_fma_source(
    root: Path,
    *,
    bases: FmaBases,
    tag: str = "v0.6.4",
    requester_builder: str = "busybox",
    proof_fault: str = "",
    mutate: Callable[[Path], None] | None = None,
) -> FmaSample:
    """Create ``root/source`` (the FMA-shaped repository, tagged, one commit past the tag), which the
    project's release.yaml (the default config) releases. ``requester_builder="go"`` cross-compiles
    the requester in a Go toolchain stage (``bases.go_builder``); ``"fails"`` makes its RUN fail, saying
    ``devkit.fma_files.REQUESTER_FAILURE`` on stderr; ``proof_fault`` (one of
    ``devkit.fma_files.PROOF_FAULTS``) makes a source the proof on Kubernetes fails; ``mutate``
    changes the tree before it is tagged."""
    if requester_builder not in REQUESTER_BUILDERS:
        raise ValueError(f"requester_builder must be one of {', '.join(REQUESTER_BUILDERS)}, not {requester_builder!r}")
    builder = bases.builder
    if requester_builder == "go":
        if bases.go_builder is None:
            raise ValueError("requester_builder='go' needs a Go builder base: "
                             "push_fma_bases(registry, go_builder=True)")
        builder = bases.go_builder
    repo = root / "source"
    repo.mkdir(parents=True)
    _write(repo, fma_files(ko_base=bases.static.pinned, builder_base=builder.ref, runtime_base=bases.runtime.ref,
                           launcher_base=bases.launcher.ref, requester_builder=requester_builder,
                           proof_fault=proof_fault))
    if mutate is not None:
        mutate(repo)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "FMA-shaped sample source")
    _git(repo, "tag", "-a", tag, "-m", f"release {tag}")
    tag_commit = _git(repo, "rev-parse", f"{tag}^{{commit}}")
    # Work after the tag: a release of the tag must show none of it.
    _write(repo, after_tag_files((repo / DUAL_PODS_TEMPLATE).read_text(encoding="utf-8")))
    _git(repo, "commit", "--quiet", "-am", "work after the tag")
    head_commit = _git(repo, "rev-parse", "HEAD")
    return FmaSample(path=repo, tag=tag, tag_commit=tag_commit, head_commit=head_commit, config=DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    """``python -m devkit.fma_sample DIR REGISTRY [TAG]``: bases pushed, source made, its facts printed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m devkit.fma_sample DIR REGISTRY [TAG]", file=sys.stderr)
        return 2
    root, registry = Path(args[0]), args[1].rstrip("/")
    bases = push_fma_bases(registry)
    sample = make_fma_source(root, bases=bases, tag=args[2] if len(args) == 3 else "v0.6.4")
    facts = {"source": sample.path, "tag": sample.tag, "tag_commit": sample.tag_commit,
             "head_commit": sample.head_commit, "config": sample.config}
    for key, value in facts.items():
        print(f"{key}={shlex.quote(str(value))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
