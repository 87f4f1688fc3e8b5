"""BuildKit builds: which CLI, the command and environment, directives, and reading a failure (pure),
plus the CLI search run against small fake docker binaries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.builders.buildkit import (
    BuildkitBuild,
    CliProbe,
    FailedStep,
    build_argv,
    build_env,
    build_failure,
    buildkit_cli,
    candidate_paths,
    choose_cli,
    client_version,
    engine_unreachable,
    failed_step,
    failure_message,
    failure_output,
    from_lines,
    split_build_args,
    syntax_directive,
    vertex_started,
    without_syntax,
)
from tasks.builders.dockerfile import base_images
from tasks.core.errors import OUTPUT_LINES, ToolMissingError
from tasks.core.redact import register

BUILD = BuildkitBuild(name="requester", label="requester linux/arm64", dockerfile=Path("/src/Dockerfile.requester"),
                      context=Path("/src"), platform="linux/arm64", tag="reg/requester:v1-linux-arm64")


def _fake_docker(path: Path, version: str, buildx: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n"
                    f'if [ "$1" = buildx ]; then {"exit 0" if buildx else "echo no buildx >&2; exit 1"}; fi\n'
                    f'if [ "$1" = --version ]; then echo "Docker version {version}, build abc"; fi\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("probes", "chosen"),
    [
        ([CliProbe("/a", False, "Docker version 28.2.2"), CliProbe("/b", False, "Docker version 20.10.24+dfsg1")],
         ["/b", "build"]),
        ([CliProbe("/a", False, "Docker version 20.10.24"), CliProbe("/b", True, "Docker version 28.2.2")],
         ["/b", "buildx", "build"]),
        ([CliProbe("/a", True, "")], ["/a", "buildx", "build"]),
        ([CliProbe("/a", False, "Docker version 28.2.2"), CliProbe("/b", False, "Docker version 18.06.1-ce")], None),
        ([CliProbe("/a", False, "Docker version 18.09.0")], ["/a", "build"]),
        ([CliProbe("/a", False, "Docker version 23.0.0")], None),
        ([CliProbe("/a", False, "")], None),
        ([], None),
    ],
)
def test_choose_cli_prefers_buildx_then_a_classic_build_older_than_23(
    probes: list[CliProbe], chosen: list[str] | None
) -> None:
    """buildx anywhere wins; else the first 18.09 <= client < 23.0; a newer client without buildx never."""
    assert choose_cli(probes) == chosen


@pytest.mark.parametrize(("text", "version"), [("Docker version 20.10.24+dfsg1, build 297e128", (20, 10)),
                                               ("Docker version 28.2.2, build e6534b4", (28, 2)), ("", None)])
def test_client_version_reads_docker_version_output(text: str, version: tuple[int, int] | None) -> None:
    """Major and minor come from `docker --version`."""
    assert client_version(text) == version


def test_candidates_come_in_order_once_each(tmp_path: Path) -> None:
    """.local/bin first, then PATH in order, then the system CLI; missing files and second names of one file drop."""
    local = _fake_docker(tmp_path / "project/.local/bin/docker", "28.0.0", buildx=False)
    first = _fake_docker(tmp_path / "a/docker", "28.0.0", buildx=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b/docker").symlink_to(first)
    system = _fake_docker(tmp_path / "usr/bin/docker", "20.10.24", buildx=False)
    path_env = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "empty")])
    assert candidate_paths(tmp_path / "project", path_env, str(system)) == [str(local), str(first), str(system)]


def test_search_runs_the_binaries_and_takes_buildx_first(tmp_path: Path) -> None:
    """A buildx-capable CLI later on PATH beats an older classic one in the project's .local/bin."""
    _fake_docker(tmp_path / "project/.local/bin/docker", "20.10.24", buildx=False)
    with_buildx = _fake_docker(tmp_path / "tools/docker", "28.2.2", buildx=True)
    assert buildkit_cli(tmp_path / "project", str(tmp_path / "tools"), str(tmp_path / "none")) == [
        str(with_buildx), "buildx", "build"]


def test_search_falls_back_to_the_system_cli(tmp_path: Path) -> None:
    """A 28.x client without buildx first on PATH is passed over for the 20.10 one."""
    _fake_docker(tmp_path / "usr/local/bin/docker", "28.2.2", buildx=False)
    system = _fake_docker(tmp_path / "usr/bin/docker", "20.10.24+dfsg1", buildx=False)
    assert buildkit_cli(tmp_path, str(tmp_path / "usr/local/bin"), str(system)) == [str(system), "build"]


def test_no_usable_cli_says_what_to_install(tmp_path: Path) -> None:
    """Only a new client without buildx: one line naming what was tried and apt-get install docker.io."""
    newer = _fake_docker(tmp_path / "bin/docker", "28.2.2", buildx=False)
    with pytest.raises(ToolMissingError, match=rf"tried {newer}\); .*apt-get install docker.io.*scripts/setup.sh"):
        buildkit_cli(tmp_path, str(tmp_path / "bin"), str(tmp_path / "none"))


def test_argv_passes_secrets_by_variable_name_and_leaves_platform_args_to_buildkit() -> None:
    """The command names the env variable of a secret, never a value, and drops TARGET*/BUILD* args."""
    build = BuildkitBuild(**{**BUILD.__dict__, "build_args": {"TARGETARCH": "amd64", "BUILD_REF": "abc"},
                             "labels": {"a.b": "c d"}, "secrets": {"token": "FMA_TOKEN"}, "target": "builder",
                             "no_cache": True})
    argv = build_argv(["/usr/bin/docker", "build"], build, Path("/tmp/x/Dockerfile"), Path("/tmp/x/iid"))
    assert argv == ["/usr/bin/docker", "build", "--progress", "plain", "--platform", "linux/arm64",
                    "-t", "reg/requester:v1-linux-arm64", "-f", "/tmp/x/Dockerfile", "--iidfile", "/tmp/x/iid",
                    "--build-arg", "BUILD_REF=abc", "--label", "a.b=c d", "--secret", "id=token,env=FMA_TOKEN",
                    "--target", "builder", "--no-cache", "/src"]
    assert split_build_args({"TARGETARCH": "amd64", "BUILDPLATFORM": "x", "X": "1"}) == (
        {"X": "1"}, ["BUILDPLATFORM", "TARGETARCH"])


def test_buildx_argv_loads_into_the_engine() -> None:
    """Through buildx the image is loaded into the engine's store whatever builder is selected."""
    argv = build_argv(["docker", "buildx", "build"], BUILD, Path("D"), Path("I"))
    assert argv[-2:] == ["--load", "/src"]


@pytest.mark.parametrize("bad", [{"tok,en": "X"}, {"token": "X=1"}, {"token": "1X"}])
def test_secret_spec_that_would_break_the_cli_syntax_is_refused(bad: dict[str, str]) -> None:
    """An id or variable name with separators in it is a ValueError, not a mangled --secret."""
    with pytest.raises(ValueError, match="secret"):
        build_argv(["docker", "build"], BuildkitBuild(**{**BUILD.__dict__, "secrets": bad}), Path("D"), Path("I"))


def test_env_points_at_the_named_engine_and_drops_inherited_tls() -> None:
    """A build's engine replaces DOCKER_HOST/CONTEXT/TLS of the process; "" keeps them."""
    inherited = {"PATH": "/bin", "DOCKER_HOST": "tcp://old:2376", "DOCKER_TLS_VERIFY": "1",
                 "DOCKER_CERT_PATH": "/old", "DOCKER_CONTEXT": "other"}
    plain = build_env(BuildkitBuild(**{**BUILD.__dict__, "docker_host": "unix:///run/b.sock"}), inherited)
    assert plain["DOCKER_HOST"] == "unix:///run/b.sock" and plain["DOCKER_BUILDKIT"] == "1"
    assert not {"DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"} & set(plain)
    tls = build_env(BuildkitBuild(**{**BUILD.__dict__, "docker_host": "tcp://b:2376", "tls_cert_path": "/c"}),
                    inherited)
    assert (tls["DOCKER_HOST"], tls["DOCKER_CERT_PATH"], tls["DOCKER_TLS_VERIFY"]) == ("tcp://b:2376", "/c", "1")
    assert build_env(BUILD, inherited)["DOCKER_HOST"] == "tcp://old:2376"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("# syntax=docker/dockerfile:1\nFROM x\n", (0, "docker/dockerfile:1")),
        ("# escape=`\n#syntax = docker/dockerfile:1.4\nFROM x\n", (1, "docker/dockerfile:1.4")),
        ("# a comment first\n# syntax=docker/dockerfile:1\nFROM x\n", None),
        ("FROM x\n# syntax=docker/dockerfile:1\n", None),
        ("\n# syntax=docker/dockerfile:1\nFROM x\n", None),
    ],
)
def test_syntax_directive_only_counts_at_the_top(text: str, found: tuple[int, str] | None) -> None:
    """Directives are the first comment lines; after any other line a `# syntax=` is a comment."""
    assert syntax_directive(text) == found


def test_without_syntax_keeps_other_directives_on_top_and_the_line_count() -> None:
    """`# escape=` after the syntax line stays a directive; every later line keeps its number."""
    text = "# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nRUN a `\n  b\n"
    out = without_syntax(text)
    assert out.splitlines()[0] == "# escape=`"
    assert syntax_directive(out) is None
    assert len(out.splitlines()) == len(text.splitlines()) and out.splitlines()[2:] == text.splitlines()[2:]
    assert without_syntax("FROM x\n") == "FROM x\n"


LOG_20_10 = """\
#5 [builder 1/3] FROM 127.0.0.1:5000/busybox:1@sha256:6148
#5 DONE 0.0s

#7 [builder 3/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]
#7 sha256:d0b4
#7 0.337 some output
#7 ERROR: executor failed running [/bin/busybox sh -c exit 3]: exit code: 3

#8 [stage-1 2/2] RUN ["/bin/busybox", "true"]
#8 ERROR: executor failed running [/bin/busybox true]: context canceled
------
 > [builder 3/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]:
------
executor failed running [/bin/busybox sh -c exit 3]: exit code: 3
"""

LOG_BUILDX = """\
#6 [builder 2/2] RUN false
#6 0.101 boom
#6 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1
------
 > [builder 2/2] RUN false:
0.101 boom
------
Dockerfile:3
--------------------
   1 | FROM x AS builder
>>> RUN false
--------------------
ERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1
"""


@pytest.mark.parametrize(
    ("log", "failure"),
    [
        (LOG_20_10, ('[builder 3/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]',
                     "executor failed running [/bin/busybox sh -c exit 3]: exit code: 3")),
        (LOG_BUILDX, ("[builder 2/2] RUN false", 'process "/bin/sh -c false" did not complete successfully: '
                      "exit code: 1")),
        ("#1 [internal] load build definition from Dockerfile\n#1 DONE 0.0s\n"
         "failed to solve with frontend dockerfile.v0: failed to create LLB definition: "
         "dockerfile parse error line 3: unknown instruction: FOO\n",
         ("", "failed to create LLB definition: dockerfile parse error line 3: unknown instruction: FOO")),
        ("ERROR: failed to solve: dockerfile parse error on line 3: unknown instruction: FOO\n",
         ("", "dockerfile parse error on line 3: unknown instruction: FOO")),
        ("", ("", "")),
    ],
)
def test_failure_is_the_first_failed_step_and_its_error(log: str, failure: tuple[str, str]) -> None:
    """The step a failure names is the first that failed (not one cancelled after it), as BuildKit names it."""
    assert build_failure(log.splitlines()) == failure


def test_a_long_step_name_is_shortened() -> None:
    """A RUN of many joined lines fits in the one-line error."""
    step, _ = build_failure([f"#3 [builder 4/9] RUN {'x' * 400}", "#3 ERROR: exit code: 1"])
    assert len(step) == 140 and step.endswith("...")


def test_engine_unreachable_is_read_from_the_cli_output() -> None:
    """Both the socket and the tcp wording of a missing engine are recognised; a build error is not."""
    assert engine_unreachable(["Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"])
    assert engine_unreachable(["error during connect: Get http://b:2375/_ping: dial tcp: no such host"])
    assert engine_unreachable(["failed to dial gRPC: cannot connect to the Docker daemon. Is 'docker daemon' running "
                               "on this host?: dial unix /tmp/no.sock: connect: no such file or directory"])
    assert not engine_unreachable(LOG_20_10.splitlines())


@pytest.mark.parametrize(
    ("lines", "stripped", "message"),
    [
        (LOG_20_10.splitlines(), "",
         'image requester linux/arm64 failed to build at [builder 3/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]: '
         "the command failed with exit code: 3; fix the Dockerfile Dockerfile.requester and re-run"),
        (LOG_BUILDX.splitlines(), "",
         "image requester linux/arm64 failed to build at [builder 2/2] RUN false: the command failed with exit code: "
         "1; fix the Dockerfile Dockerfile.requester and re-run"),
        (["#5 [builder 2/2] RUN go build", "#5 0.3 exec /bin/sh: exec format error",
          "#5 ERROR: executor failed running [/bin/sh -c go build]: exit code: 1"], "",
         "image requester linux/arm64 failed to build at [builder 2/2] RUN go build: this engine cannot run "
         "linux/arm64 programs (exec format error: no binfmt_misc handler qemu-aarch64); run scripts/setup.sh on "
         "the engine's machine to register qemu-user-static, use an engine of that platform, or remove "
         "linux/arm64 from 'platforms'"),
        (["#3 [internal] load metadata for 127.0.0.1:9/bases/busybox:1",
          '#3 ERROR: failed to do request: Head "http://127.0.0.1:9/v2/bases/busybox/manifests/1": connect: '
          "connection refused"], "",
         "image requester linux/arm64: BuildKit cannot get the base image 127.0.0.1:9/bases/busybox:1: failed to "
         'do request: Head "http://127.0.0.1:9/v2/bases/busybox/manifests/1": connect: connection refused; check '
         "that 127.0.0.1:9 answers (re-run when it does), or point the image at a registry that has it with "
         "mirrors: in the release config"),
        (["failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error "
          "line 3: unknown instruction: FOO"], "docker/dockerfile:1.7",
         "image requester linux/arm64 failed to build: failed to create LLB definition: dockerfile parse error "
         "line 3: unknown instruction: FOO; the file may need the frontend docker/dockerfile:1.7 of its # syntax= "
         "line: load that image into the engine (docker load) or fix the Dockerfile Dockerfile.requester and "
         "re-run"),
        ([], "", ""),
    ],
)
def test_failure_message_names_where_what_and_the_fix(lines: list[str], stripped: str, message: str) -> None:
    """Each kind of failure gets its own fix: the Dockerfile, an emulator, the base's registry, the frontend."""
    assert failure_message(BUILD, lines, stripped) == message


def test_the_failed_steps_own_output_is_read_without_buildkits_prefixes() -> None:
    """The first failed step's output lines come back as the step printed them, whatever came after its error."""
    assert failed_step(LOG_20_10.splitlines()) == FailedStep(
        '[builder 3/3] RUN ["/bin/busybox", "sh", "-c", "exit 3"]',
        "executor failed running [/bin/busybox sh -c exit 3]: exit code: 3", ("some output",))
    assert failed_step(LOG_BUILDX.splitlines()).output == ("boom",)
    assert failed_step(["#3 [a 1/1] RUN x", "#3 0.1 ", "#3 0.2 the end", "#3 ERROR: exit code: 1"]).output == (
        "", "the end")


LONG_RUN = ["#9 [builder 3/4] RUN ./fetch.sh", "#9 sha256:aa", "#9 DONE 0.0s"]  # a name line BuildKit repeats
LONG_RUN += [f"#9 0.{n:03d} attempt {n} of 12" for n in range(1, 13)]
LONG_RUN += ["#9 1.500 fetch: token pw-leak-me-7 refused", "#9 1.600 fetch: no route to gpu-catalog",
             "#9 ERROR: executor failed running [/bin/sh -c ./fetch.sh]: exit code: 3",
             "------", " > [builder 3/4] RUN ./fetch.sh:", "#9 1.600 fetch: no route to gpu-catalog", "------"]


def test_failure_output_is_the_last_lines_of_the_step_bounded_and_masked() -> None:
    """The console gets at most OUTPUT_LINES of the failing step, its last ones, with secrets masked."""
    register("pw-leak-me-7")
    output = failure_output(LONG_RUN)
    assert len(output) == OUTPUT_LINES
    assert output[-1] == "fetch: no route to gpu-catalog" and output[-2] == "fetch: token *** refused"
    assert output[0] == "attempt 9 of 12"


def test_failure_output_without_a_failed_step_is_the_cli_s_last_lines() -> None:
    """A parse error has no step: its last lines are the CLI's own; a step that printed nothing gives none."""
    lines = ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s",
             "failed to solve with frontend dockerfile.v0: dockerfile parse error line 3: unknown instruction: FOO"]
    assert failure_output(lines) == (lines[-1],)
    assert failure_output(["#3 [a 1/1] RUN false", "#3 ERROR: exit code: 1"]) == ()


def test_failure_message_names_the_dockerfile_as_configured_its_line_and_the_platform() -> None:
    """A single-platform image says its platform; the Dockerfile is the release config's path, at the RUN's line."""
    build = BuildkitBuild(name="launcher", label="launcher", dockerfile=Path("/tmp/x/Dockerfile.launcher.linux-amd64"),
                          context=Path("/src"), platform="linux/amd64", tag="reg/launcher:v1",
                          dockerfile_name="dockerfiles/Dockerfile.launcher.benchmark")
    text = "ARG BASE=x\nFROM ${BASE}\nWORKDIR /app\nRUN ./fetch.sh\n"
    lines = [line.replace("[builder 3/4]", "[3/3]") for line in LONG_RUN]
    assert failure_message(build, lines, dockerfile_text=text) == (
        "image launcher (linux/amd64) failed to build at [3/3] RUN ./fetch.sh: the command failed with exit code: 3; "
        "fix the Dockerfile dockerfiles/Dockerfile.launcher.benchmark (line 4) and re-run")


def test_a_base_buildkit_cannot_pull_is_named_as_the_dockerfile_writes_it() -> None:
    """The pinned, mirrored base BuildKit names is traced back to its FROM line; the fix names mirrors:."""
    original = "# requester\nFROM --platform=$BUILDPLATFORM quay.io/projectquay/golang:1.26 AS builder\nFROM scratch\n"
    staged_text = ("# requester\nFROM --platform=linux/amd64 127.0.0.1:9/m/projectquay/golang@sha256:"
                   + "ab" * 32 + " AS builder\nFROM scratch\n")
    args = {"BUILDPLATFORM": "linux/amd64"}
    lines = from_lines(original, base_images(staged_text, args), args, "dockerfiles/Dockerfile.requester")
    assert lines == {f"127.0.0.1:9/m/projectquay/golang@sha256:{'ab' * 32}":
                     "FROM quay.io/projectquay/golang:1.26 (dockerfiles/Dockerfile.requester line 2)"}
    build = BuildkitBuild(name="requester", label="requester linux/amd64", dockerfile=Path("/t/D"), context=Path("/"),
                          platform="linux/amd64", tag="t", from_lines=lines)
    message = failure_message(build, [
        f"#3 [internal] load metadata for 127.0.0.1:9/m/projectquay/golang@sha256:{'ab' * 32}",
        "#3 ERROR: failed to do request: connect: connection refused"])
    assert "for FROM quay.io/projectquay/golang:1.26 (dockerfiles/Dockerfile.requester line 2)" in message
    assert "mirrors: in the release config" in message and "check that 127.0.0.1:9 answers" in message


def test_a_step_is_told_once_when_it_starts() -> None:
    """Each vertex's name is a step the first time its number shows; its output and repeats are not."""
    seen: set[str] = set()
    steps = [vertex_started(line, seen) for line in LONG_RUN[:5]]
    assert steps == ["[builder 3/4] RUN ./fetch.sh", "", "", "", ""]
    assert vertex_started("#10 exporting to image", seen) == "exporting to image"
    assert vertex_started("not a vertex", seen) == ""
