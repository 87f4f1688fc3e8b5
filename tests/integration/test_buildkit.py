"""Dockerfile builds with the engine's BuildKit (tasks/builders/buildkit.py), on the real dockerd.

Every build starts FROM the 2-platform busybox index of devkit/multiarch.py in the session registry,
which BuildKit pulls itself: the index's tag is never in the engine's image store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from devkit.engine import EngineProcess
from devkit.multiarch import busybox_index
from devkit.registry import RegistryProcess
from devkit.requester_shape import make_requester_context, saved_files
from tasks.builders.buildkit import BuildkitBuild, BuildkitClient, buildkit_cli
from tasks.core.errors import EngineError, ImageBuildError
from tasks.oci.registry import RegistryAPI
from tasks.push import push_engine_image
from tasks.run.context import RunContext
from tasks.run.result import BuiltImage

pytestmark = pytest.mark.integration


class Lines:
    """A logger stand-in that keeps each message as it would be printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


@pytest.fixture(scope="module")
def base(registry: RegistryProcess) -> str:
    """A busybox index for linux/amd64 and linux/arm64 in the session registry."""
    return busybox_index(f"{registry.host}/bk{uuid.uuid4().hex[:6]}").ref


@pytest.fixture(scope="module")
def buildkit() -> BuildkitClient:
    """One BuildKit client for the module's builds, as the engine's owner would keep it."""
    return BuildkitClient()


@pytest.fixture
def tags(engine: docker.APIClient) -> Iterator[list[str]]:
    """Tags the test builds; removed from the engine afterwards."""
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.remove_image(tag, force=True, noprune=True)


def _build(buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
           dockerfile: Path, platform: str = "linux/amd64", log: Lines | None = None, **extra: object) -> str:
    tag = f"{registry.host}/{namespace}/requester:v1-{platform.replace('/', '-')}"
    tags.append(tag)
    build = BuildkitBuild(name="requester", label=f"requester {platform}", dockerfile=dockerfile,
                          context=dockerfile.parent, platform=platform, tag=tag, **extra)  # type: ignore[arg-type]
    return buildkit.build(build, log or Lines())


def _saved(engine: docker.APIClient, image: str) -> bytes:
    """The image as ``docker save`` writes it: config, manifest and every layer tar."""
    return b"".join(engine.get_image(image))


def test_this_machine_builds_through_debians_docker_cli() -> None:
    """Without buildx the 28.x client first on PATH is passed over for Debian's 20.10 classic build."""
    assert buildkit_cli() == ["/usr/bin/docker", "build"]


@pytest.mark.parametrize(
    ("platform", "final_machine", "architecture"),
    [("linux/arm64", "aarch64", "arm64"), ("linux/amd64", "x86_64", "amd64")],
)
def test_builder_stage_runs_natively_and_final_stage_on_the_target(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path, platform: str, final_machine: str, architecture: str,
) -> None:
    """The $BUILDPLATFORM stage runs on x86_64 with TARGETARCH set; the final stage and config are the target's."""
    with pytest.raises(docker.errors.ImageNotFound):
        engine.inspect_image(base)  # BuildKit pulls the base from the registry, not from the engine
    dockerfile = make_requester_context(tmp_path, base, uuid.uuid4().hex)
    image_id = _build(buildkit, tags, registry, namespace, dockerfile, platform)
    files = saved_files(_saved(engine, image_id))
    assert files["/app/builder-arch"] == b"x86_64\n"
    assert files["/app/target"] == f"{platform}\n".encode()
    assert files["/app/final-arch"] == f"{final_machine}\n".encode()
    info = engine.inspect_image(tags[-1])
    assert info["Id"] == image_id
    assert (info["Os"], info["Architecture"]) == ("linux", architecture)


def test_built_image_pushes_with_the_engine_push(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path, run_context: RunContext,
) -> None:
    """The release's pusher publishes a BuildKit image; the registry's config says arm64 and has the label."""
    dockerfile = make_requester_context(tmp_path, base, uuid.uuid4().hex)
    image_id = _build(buildkit, tags, registry, namespace, dockerfile, "linux/arm64",
                      labels={"org.opencontainers.image.version": "v1"})
    pushed = push_engine_image(engine, BuiltImage(name="requester", ref=tags[-1], image_id=image_id), run_context,
                               Lines())
    with RegistryAPI(registry.host) as api:
        found = api.manifest(f"{namespace}/requester", "v1-linux-arm64")
        assert found is not None and found[0] == pushed.digest
        config = json.loads(api.blob(f"{namespace}/requester", found[1]["config"]["digest"]))
    assert config["architecture"] == "arm64"
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == "v1"


def test_labels_are_in_the_image_config(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path,
) -> None:
    """Labels, with quotes, spaces and $ in them, come out exactly as given."""
    labels = {"org.opencontainers.image.revision": "0123abc", "io.example.note": 'a "quoted" $HOME, and = too'}
    dockerfile = make_requester_context(tmp_path, base, uuid.uuid4().hex)
    image_id = _build(buildkit, tags, registry, namespace, dockerfile, labels=labels)
    found = engine.inspect_image(image_id)["Config"]["Labels"] or {}
    assert {key: found.get(key) for key in labels} == labels


def test_cache_mount_survives_into_another_release(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path,
) -> None:
    """What one build leaves in a cache mount, a build of another Dockerfile, context and tag finds there."""
    nonce = uuid.uuid4().hex
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir()
    second.mkdir()
    mount = "--mount=type=cache,target=/cache"
    (first / "Dockerfile").write_text(
        f"FROM {base}\n"
        f'RUN {mount} ["/bin/busybox", "sh", "-c", "echo {nonce} > /cache/{nonce}; echo written > /written"]\n')
    (second / "Dockerfile.next").write_text(
        f"FROM {base}\n"
        f'RUN {mount} ["/bin/busybox", "sh", "-c", "/bin/busybox cat /cache/{nonce} > /seen"]\n')
    _build(buildkit, tags, registry, namespace, first / "Dockerfile")
    tag = f"{registry.host}/{namespace}/requester:v2"
    tags.append(tag)
    image_id = buildkit.build(BuildkitBuild(name="requester", label="requester", dockerfile=second / "Dockerfile.next",
                                            context=second, platform="linux/amd64", tag=tag), Lines())
    files = saved_files(_saved(engine, image_id))
    assert files["/seen"] == f"{nonce}\n".encode()
    assert not any(path.startswith("/cache/") for path in files)  # the cache is no layer


def test_secret_reaches_the_run_but_no_layer_history_or_log(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secret mount from an env variable: its digest is in the image, its value nowhere, its echo masked."""
    secret = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("FMA_TEST_BUILD_TOKEN", secret)
    mount = "--mount=type=secret,id=token"
    # The secret is no part of BuildKit's cache key: without the nonce a step from an earlier run
    # (with an earlier token) would be reused.
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"FROM {base} AS leak\n"  # a stage that does keep it: shows the checks below can see a leak
        f'RUN {mount} ["/bin/busybox", "sh", "-c", "/bin/busybox cp /run/secrets/token /leaked # {uuid.uuid4().hex}"]\n'
        f"FROM {base}\n"
        f'RUN {mount} ["/bin/busybox", "sh", "-c", "/bin/busybox md5sum < /run/secrets/token > /sum; '
        f'echo the token is $(/bin/busybox cat /run/secrets/token) # {uuid.uuid4().hex}"]\n')
    log = Lines()
    secrets = {"token": "FMA_TEST_BUILD_TOKEN"}
    image_id = _build(buildkit, tags, registry, namespace, dockerfile, log=log, secrets=secrets)
    saved = _saved(engine, image_id)
    assert saved_files(saved)["/sum"].split()[0] == hashlib.md5(secret.encode()).hexdigest().encode()  # noqa: S324
    assert secret.encode() not in saved
    assert secret not in json.dumps(engine.history(image_id))
    assert any("the token is ***" in line for line in log.lines)
    assert not any(secret in line for line in log.lines)

    leaky = _build(buildkit, tags, registry, f"{namespace}-leak", dockerfile, secrets=secrets, target="leak")
    assert secret.encode() in _saved(engine, leaky)


def test_stage_the_target_does_not_need_is_skipped(
    buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str, base: str, tmp_path: Path,
) -> None:
    """A failing stage nothing copies from does not run, so the build succeeds."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"FROM {base} AS docs\n"
        'RUN ["/bin/busybox", "false"]\n'
        f"FROM {base} AS builder\n"
        f'RUN ["/bin/busybox", "sh", "-c", "echo {uuid.uuid4().hex} > /built"]\n'
        f"FROM {base}\n"
        "COPY --from=builder /built /built\n")
    log = Lines()
    assert _build(buildkit, tags, registry, namespace, dockerfile, log=log).startswith("sha256:")
    assert not any("[docs " in line for line in log.lines)


def test_failing_run_is_one_line_naming_the_step_and_exit_code(
    buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str, base: str, tmp_path: Path,
) -> None:
    """The error names the stage and step as BuildKit does, the exit code, and the Dockerfile to fix at the
    step's line; the step's own last lines (stderr too) come with it."""
    dockerfile = tmp_path / "Dockerfile.requester"
    dockerfile.write_text(
        f"FROM {base} AS builder\n"
        f'RUN ["/bin/busybox", "sh", "-c", "echo {uuid.uuid4().hex}"]\n'
        'RUN ["/bin/busybox", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo try $i; done; '
        'echo no model index here >&2; exit 3"]\n'
        f"FROM {base}\n"
        "COPY --from=builder /bin/busybox /app/busybox\n")
    with pytest.raises(ImageBuildError) as caught:
        _build(buildkit, tags, registry, namespace, dockerfile, dockerfile_name="dockerfiles/Dockerfile.requester")
    message = str(caught.value)
    assert caught.value.image == "requester"
    assert "\n" not in message
    assert message.startswith('image requester linux/amd64 failed to build at [builder 3/3] RUN ["/bin/busybox", "sh"')
    assert "exit code: 3" in message
    assert message.endswith("fix the Dockerfile dockerfiles/Dockerfile.requester (line 3) and re-run")
    # The step's own last lines, at most 6. BuildKit orders each stream's lines but not the two streams against
    # each other (the stderr line has come before "try 3" under load), so the window is checked as a set.
    own = {f"try {i}" for i in range(1, 9)} | {"no model index here"}
    output = caught.value.output
    assert len(output) == 6 and set(output) <= own and "try 8" in output, output


def test_foreign_step_without_emulator_says_how_to_get_one(
    buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str, tmp_path: Path,
) -> None:
    """A riscv64 program with no qemu-riscv64 registered gives the exec-format hint."""
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9  # 64-bit little-endian ELF for RISC-V (machine 243)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 243, 1, 0x10000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    program = tmp_path / "hello"
    program.write_bytes(header.ljust(128, b"\0"))
    program.chmod(0o755)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM scratch\nCOPY hello /hello\nRUN [\"/hello\", \"{uuid.uuid4().hex}\"]\n")
    hint = r"at \[2/2\] RUN .*exec format error: no binfmt_misc handler qemu-riscv64"
    with pytest.raises(ImageBuildError, match=hint):
        _build(buildkit, tags, registry, namespace, dockerfile, "linux/riscv64")


def test_unreachable_engine_is_an_engine_error(buildkit: BuildkitClient, tmp_path: Path) -> None:
    """A build sent to an engine that is not there names its address and how to start one."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    build = BuildkitBuild(name="requester", label="requester", dockerfile=dockerfile, context=tmp_path,
                          platform="linux/amd64", tag="fma-test/none:1", docker_host=f"unix://{tmp_path}/no.sock")
    expected = rf"cannot reach the Docker engine at unix://{tmp_path}/no.sock .*start dockerd"
    with pytest.raises(EngineError, match=expected):
        buildkit.build(build, Lines())


def test_base_that_cannot_be_fetched_names_the_base_and_its_registry(
    buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str, tmp_path: Path,
) -> None:
    """A FROM image whose registry does not answer is a base-image error, not a Dockerfile one: it names the
    FROM line as the source writes it, and mirrors: as the way to point it elsewhere."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM 127.0.0.1:9/bases/busybox:1\nRUN [\"/bin/busybox\", \"true\"]\n")
    written = {"127.0.0.1:9/bases/busybox:1": "FROM 127.0.0.1:9/bases/busybox:1 (dockerfiles/Dockerfile line 1)"}
    with pytest.raises(ImageBuildError, match=r"cannot get the base image 127.0.0.1:9/bases/busybox:1 for FROM "
                                              r"127.0.0.1:9/bases/busybox:1 \(dockerfiles/Dockerfile line 1\): "
                                              r".*refused; check that 127.0.0.1:9 answers .*mirrors: in the release"):
        _build(buildkit, tags, registry, namespace, dockerfile, from_lines=written)


def test_build_goes_to_the_engine_it_names(
    engine: docker.APIClient, buildkit: BuildkitClient, registry: RegistryProcess, namespace: str, base: str,
    tmp_path: Path,
) -> None:
    """With docker_host set the image lands in that engine's store, and only there."""
    second = EngineProcess().start()
    try:
        dockerfile = make_requester_context(tmp_path, base, uuid.uuid4().hex)
        tag = f"{registry.host}/{namespace}/requester:v1-linux-arm64"
        image_id = buildkit.build(BuildkitBuild(
            name="requester", label="requester linux/arm64", dockerfile=dockerfile, context=tmp_path,
            platform="linux/arm64", tag=tag, docker_host=second.docker_host), Lines())
        other = docker.APIClient(base_url=second.docker_host, version="auto")
        try:
            assert other.inspect_image(tag)["Id"] == image_id
            assert saved_files(b"".join(other.get_image(image_id)))["/app/builder-arch"] == b"x86_64\n"
        finally:
            other.close()
        with pytest.raises(docker.errors.ImageNotFound):
            engine.inspect_image(tag)
    finally:
        second.stop()


def test_syntax_directive_is_left_out_when_its_frontend_cannot_be_had(
    engine: docker.APIClient, buildkit: BuildkitClient, tags: list[str], registry: RegistryProcess, namespace: str,
    base: str, tmp_path: Path,
) -> None:
    """`# syntax=docker/dockerfile:1` builds with the engine's own frontend, says so, and keeps `# escape=`."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"# syntax=docker/dockerfile:1\n# escape=`\nFROM {base}\n"
                          f'RUN ["/bin/busybox", "sh", "-c", "echo {uuid.uuid4().hex} `\n > /made"]\n')
    log = Lines()
    image_id = _build(buildkit, tags, registry, namespace, dockerfile, log=log)
    assert "/made" in saved_files(_saved(engine, image_id))
    assert any("# syntax=docker/dockerfile:1 cannot be pulled here" in line for line in log.lines)
    assert dockerfile.read_text().startswith("# syntax=docker/dockerfile:1\n")  # the source is not edited

    dockerfile.write_text(f"# syntax=docker/dockerfile:1.99\nFROM {base}\nFROBNICATE now\n")
    with pytest.raises(ImageBuildError, match=r"unknown instruction: FROBNICATE.*frontend docker/dockerfile:1.99"):
        _build(buildkit, tags, registry, namespace, dockerfile)
