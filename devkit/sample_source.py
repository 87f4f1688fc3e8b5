"""An FMA-like source repository made on the spot, for the demo, tests and benchmarks.

No public image can be pulled on these machines, so every image is built
``FROM scratch`` with a static busybox copied in. The repository is tagged
and then gets one more commit, so that building HEAD instead of the tag shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

FMA_IMAGES = ("dual-pods-controller", "launcher-populator", "launcher", "requester")
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class SampleSource:
    path: Path
    tag: str
    tag_commit: str
    head_commit: str
    config: Path  # a release config for it (outside the repository)


def dockerfile_text(
    name: str, *, sleep: float = 0, fail: bool = False, base: str = "", sleep_url: str = "", gate: str = "",
) -> str:
    """A scratch image that records its name and the source VERSION; optionally slow or broken.

    With ``base`` (an image holding /bin/busybox: :func:`base_image`, or a multi-platform one of
    devkit/multiarch.py) it starts FROM it and also records the machine its RUN step ran on. With
    ``sleep_url`` (a :class:`devkit.sleep_server.SleepServer`) the image has only the sleep, a fetch
    of a slow URL instead of a container; with ``gate`` too, its build waits until the test opens that gate.
    """
    if sleep_url:  # for benchmarks: as few steps as possible, each one costs the engine a layer
        return (
            f"FROM {base or 'scratch'}\n"
            + ("" if base else "COPY busybox /bin/busybox\n")
            # The same URL for the same sleep: the engine downloads it every time (the build waits),
            # then finds the layer in its cache.
            + (f"ADD {sleep_url}/gate/{gate} /app/gate\n" if gate else "")
            + (f"ADD {sleep_url}/{sleep}/slept /app/slept\n" if sleep else "")
            + ('RUN ["/bin/busybox", "false"]\n' if fail else "")
        )
    # COPY comes first: an ARG or LABEL before the first COPY trips the legacy
    # builder's platform check on FROM scratch.
    run = f"/bin/busybox sleep {sleep} && " if sleep else ""
    run += "/bin/busybox false && " if fail else ""
    run += f"/bin/busybox mkdir -p /app && echo {name} > /app/name"
    if base:
        run += " && /bin/busybox uname -m > /app/arch"
        return (
            f"FROM {base}\n"
            "COPY VERSION /app/VERSION\n"
            f'RUN ["/bin/busybox", "sh", "-c", "{run}"]\n'
            'CMD ["/bin/busybox", "cat", "/app/VERSION"]\n'
        )
    return (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY VERSION /app/VERSION\n"
        f'RUN ["/bin/busybox", "sh", "-c", "{run}"]\n'
        'CMD ["/bin/busybox", "cat", "/app/VERSION"]\n'
    )


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "FMA Sample", "GIT_AUTHOR_EMAIL": "sample@example.invalid",
        "GIT_COMMITTER_NAME": "FMA Sample", "GIT_COMMITTER_EMAIL": "sample@example.invalid",
    }
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_sample_source(  # noqa: PLR0913 - a test-data factory: each option is one variation of the sample
    root: Path,
    *,
    tag: str = "v0.3.1",
    images: Iterable[str] = FMA_IMAGES,
    sleeps: Mapping[str, float] | None = None,
    broken: Iterable[str] = (),
    chart_from: str = "project",
    nonce: str = "",
    mutate: Callable[[Path], None] | None = None,
    base: str = "",
    sleep_url: str = "",
    platforms: Mapping[str, Sequence[str]] | None = None,
    gates: Mapping[str, str] | None = None,
) -> SampleSource:
    """Create ``root/source`` (a tagged git repo) and ``root/release.yaml`` for it.

    ``base``: the image every Dockerfile starts FROM (default scratch); ``platforms``: an image's
    ``platforms`` in the config (default: none given, so linux/amd64); ``gates``: image -> the
    :class:`~devkit.sleep_server.SleepServer` gate its build waits at (needs ``sleep_url``).
    """
    platforms = dict(platforms or {})
    sleeps = dict(sleeps or {})
    broken = set(broken)
    images = list(images)
    repo = root / "source"
    (repo / "dockerfiles").mkdir(parents=True)
    if not base:  # a base image brings its own busybox
        shutil.copy2(BUSYBOX, repo / "busybox")
    (repo / "VERSION").write_text(f"{tag.removeprefix('v')}\n{nonce}\n")
    for name in images:
        text = dockerfile_text(name, sleep=sleeps.get(name, 0), fail=name in broken, base=base, sleep_url=sleep_url,
                               gate=(gates or {}).get(name, ""))
        (repo / "dockerfiles" / f"Dockerfile.{name}").write_text(text)
    if chart_from == "source":
        shutil.copytree(Path(__file__).resolve().parent.parent / "charts", repo / "charts")
    if mutate is not None:  # a test's own change to the tree before it is tagged
        mutate(repo)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "sample FMA source")
    _git(repo, "tag", "-a", tag, "-m", f"release {tag}")
    tag_commit = _git(repo, "rev-parse", f"{tag}^{{commit}}")
    # A commit after the tag: a release must not pick it up.
    (repo / "VERSION").write_text("main-after-the-tag\n")
    _git(repo, "commit", "--quiet", "-am", "work after the tag")
    head_commit = _git(repo, "rev-parse", "HEAD")

    config = root / "release.yaml"
    lines = ["images:"]
    for name in images:
        lines += [f"  - name: {name}", f"    dockerfile: dockerfiles/Dockerfile.{name}", "    context: ."]
        if name in platforms:
            lines += [f"    platforms: [{', '.join(platforms[name])}]"]
    lines += ["charts:", "  - path: charts/fma-controllers", f"    from: {chart_from}"] if _chart_fits(images) else [
        "charts: []"
    ]
    config.write_text("\n".join(lines) + "\n")
    return SampleSource(path=repo, tag=tag, tag_commit=tag_commit, head_commit=head_commit, config=config)


def base_image(client: docker.APIClient, tag: str = "fma-sample-base:busybox") -> str:
    """Build (once per engine) a base image holding a static busybox; return its tag.

    The legacy builder looks up its cache for a ``FROM scratch`` step by reading every image in
    the engine's store, so on an engine with thousands of images each such build costs seconds of
    CPU; builds from a base image read only that image's children.
    """
    try:
        client.inspect_image(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory() as context:
        shutil.copy2(BUSYBOX, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n")
        for item in client.build(path=context, tag=tag, rm=True, decode=True):
            if "error" in item:
                raise RuntimeError(f"cannot build {tag}: {item['error']}")
    return tag


def _chart_fits(images: list[str]) -> bool:
    # The chart references both controllers; without them it would be refused.
    return {"dual-pods-controller", "launcher-populator"} <= set(images)


def main() -> None:
    """``python -m devkit.sample_source DIR [TAG]``: make a sample source, print its paths."""
    import sys

    root = Path(sys.argv[1])
    tag = sys.argv[2] if len(sys.argv) > 2 else "v0.3.1"
    src = make_sample_source(root, tag=tag)
    print(f"source={src.path}")
    print(f"config={src.config}")
    print(f"tag_commit={src.tag_commit}")


if __name__ == "__main__":
    main()
