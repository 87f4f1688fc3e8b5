"""The release host under attack, on real parts: a source that tries to run code or publish host files,
inputs that point credentials or deletions elsewhere. Each attack is refused or finds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from devkit import prefect_api
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import SampleSource
from tasks.core import cmd
from tasks.core.errors import RegistryError
from tasks.core.sandbox import build_user
from tasks.oci.registry import RegistryAPI
from tasks.run.settings import Settings

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("fma-release"))
SECRETS = {
    "FMA_REGISTRY_PASSWORD": "reg-pw-" + uuid.uuid4().hex,
    "FMA_SIGNING_PASSWORD": "sign-pw-" + uuid.uuid4().hex,
    "GITHUB_TOKEN": "ghp_" + uuid.uuid4().hex,
    "GITHUB_WEBHOOK_SECRET": "whsec-" + uuid.uuid4().hex,
}
# A release host as an operator sets it up: every secret exported, the registry credentials bound to ghcr.io.
HOST_ENV = {**SECRETS, "FMA_REGISTRY_USERNAME": "fma-bot", "FMA_REGISTRY_HOSTS": "ghcr.io"}


def fma_release(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **env})


def no_secret_in(text: str) -> bool:
    return not any(value in text for value in SECRETS.values())


# -- 1. the source's code never runs with a secret in reach --------------------------------------


CGO_MAIN = 'package main\n\n// int answer() { return 42; }\nimport "C"\n\nfunc main() { println(C.answer()) }\n'


def test_the_ko_yaml_cc_trick_is_refused_before_anything_runs(
    sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """A .ko.yaml turning cgo on with CC=sh -c '...' for a main importing "C": one line naming CC, exit 1,
    and the command it names never ran."""
    marker = tmp_path / "ran-as"

    def add_cgo_main(repo: Path) -> None:
        (repo / "go.mod").write_text("module example.test/evil\n\ngo 1.22\n")
        (repo / "cmd" / "evil").mkdir(parents=True)
        (repo / "cmd" / "evil" / "main.go").write_text(CGO_MAIN)
        script = f"id -u > {marker}; cat /proc/$PPID/environ >> {marker}; exec cc \\\"$@\\\""
        (repo / ".ko.yaml").write_text(
            "defaultBaseImage: 127.0.0.1:1/none:latest\nbuilds:\n- id: evil\n  main: ./cmd/evil\n"
            f"  env: [CGO_ENABLED=1, \"CC=sh -c '{script}' sh\"]\n")

    src = sample(images=(), mutate=add_cgo_main)
    src.config.write_text("images:\n  - name: evil\n    builder: ko\n    main: ./cmd/evil\n    platforms: all\n"
                          "charts: []\n")
    done = fma_release("run", src.tag, "--source", str(src.path), "--registry", "127.0.0.1:1/ns",
                       "--config", str(src.config), "--dry-run", env=HOST_ENV)
    assert done.returncode == 1, done.stderr
    assert "image evil: .ko.yaml: builds entry 'evil' sets CGO_ENABLED in the build's environment" in done.stderr
    assert not marker.exists()
    assert no_secret_in(done.stdout + done.stderr)


def test_a_build_runs_as_the_build_user_with_no_secret_in_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ko and its compiler run as (cmd.stream with the build user): not root, no secret in its
    environment, and the release process's /proc/<pid>/environ cannot be read."""
    user = build_user()
    assert user is not None, "the tests run as root: the build user must exist (scripts/setup.sh)"
    for name, value in HOST_ENV.items():
        monkeypatch.setenv(name, value)
    Settings.from_env()  # the run reads its secrets, as a release does
    probe = (f"id -u; id -G; env; cat /proc/{os.getpid()}/environ && echo READ-PARENT; "
             "cat /proc/$PPID/environ && echo READ-PPID; ls /root && echo READ-ROOT; true")
    lines: list[str] = []
    cmd.stream(["sh", "-c", probe], on_line=lines.append, what="probe", fix="", user=user, cwd="/")
    uid, groups = int(lines[0]), lines[1].split()
    assert uid == user.uid != 0 and groups == [str(user.gid)]
    output = "\n".join(lines)
    assert "READ-PARENT" not in output and "READ-ROOT" not in output
    assert "Permission denied" in output
    assert no_secret_in(output)


# -- 2. nothing from outside the checkout gets into a chart --------------------------------------


def test_a_chart_linking_to_proc_or_outside_is_refused_before_packaging(
    sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """files/environ -> /proc/self/environ and files/outside.txt -> a host file: one line naming the link,
    no chart archive, no secret in the output."""
    outside = tmp_path / "host-file.txt"
    outside.write_text("host-only-" + uuid.uuid4().hex)

    def links(repo: Path) -> None:
        files = repo / "charts" / "fma-controllers" / "files"
        files.mkdir(parents=True, exist_ok=True)
        (files / "outside.txt").symlink_to(outside)
        (files / "environ").symlink_to("/proc/self/environ")

    src = sample(images=("launcher",), chart_from="source", mutate=links)
    # The image's context leaves the chart out (a context of "." would be refused for the same links first).
    src.config.write_text("images:\n  - name: launcher\n    dockerfile: dockerfiles/Dockerfile.launcher\n"
                          "    context: dockerfiles\ncharts:\n  - path: charts/fma-controllers\n    from: source\n")
    state = tmp_path / "state"
    done = fma_release("run", src.tag, "--source", str(src.path), "--registry", "127.0.0.1:1/ns",
                       "--config", str(src.config), "--dry-run", "--workdir", "w",
                       env={**HOST_ENV, "FMA_STATE_DIR": str(state)})
    assert done.returncode != 0
    error = [line for line in done.stderr.splitlines() if line.startswith("fma-release: error:")]
    assert len(error) == 1 and "chart fma-controllers: the link files/" in error[0], done.stderr
    assert "points into /proc" in error[0] or "points outside the chart" in error[0]
    assert not list((state / "workspaces" / "w").rglob("*.tgz"))
    assert outside.read_text() not in done.stdout + done.stderr and no_secret_in(done.stdout + done.stderr)


# -- 3. credentials go only to their own hosts ---------------------------------------------------


class Recorder:
    """A registry-shaped HTTP server that records each request's Authorization and answers a challenge."""

    def __init__(self, challenge: Callable[[Recorder], str]) -> None:
        self.seen: list[tuple[str, str]] = []  # (path, Authorization header or "")
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization", "")))
                if self.path.startswith("/token"):
                    body = json.dumps({"token": "t"}).encode()
                    self.send_response(200)
                else:
                    body = b"{}"
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", challenge(recorder))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        recorder.close()


def test_a_registry_the_credentials_do_not_name_gets_no_authorization(
    sample: Callable[..., SampleSource], recorders: list[Recorder],
) -> None:
    """`--registry` at a host outside FMA_REGISTRY_HOSTS: the run fails at its preflight, and not one of the
    host's requests carried an Authorization header."""
    fake = Recorder(lambda _: 'Basic realm="fake"')
    recorders.append(fake)
    src = sample(images=("launcher",))
    done = fma_release("run", src.tag, "--source", str(src.path), "--registry", f"{fake.host}/ns",
                       "--config", str(src.config), env=HOST_ENV)
    assert done.returncode != 0
    assert fake.seen, "the preflight asked the registry"
    assert all(auth == "" for _, auth in fake.seen), fake.seen
    assert f"registry {fake.host} requires credentials" in done.stderr and no_secret_in(done.stderr)


def ask(api: RegistryAPI) -> None:
    """One read; the recorders refuse every request, which is not what is checked here."""
    with pytest.raises(RegistryError, match="refused"):
        api.digest("ns/x", "v1")


def test_credentials_go_to_their_host_only_after_its_challenge_and_never_to_another_realm(
    recorders: list[Recorder],
) -> None:
    """Bound host: the first request is anonymous, Basic follows the Basic challenge. A Bearer realm on an
    unbound host gets no credentials; the same realm once bound gets them."""
    basic = Recorder(lambda _: 'Basic realm="r"')
    realm = Recorder(lambda _: "")
    bearer = Recorder(lambda _: f'Bearer realm="http://{realm.host}/token",service="s"')
    recorders += [basic, realm, bearer]
    env = {"FMA_REGISTRY_USERNAME": "fma-bot", "FMA_REGISTRY_PASSWORD": SECRETS["FMA_REGISTRY_PASSWORD"]}
    settings = Settings.from_env({**env, "FMA_REGISTRY_HOSTS": f"{basic.host},{bearer.host}"})
    with RegistryAPI(basic.host, settings) as api:
        ask(api)
    assert [auth.split(" ")[0] for _, auth in basic.seen] == ["", "Basic"]

    with RegistryAPI(bearer.host, settings) as api:
        ask(api)
    assert realm.seen and all(auth == "" for _, auth in realm.seen)
    assert all(not auth.startswith("Basic") for _, auth in bearer.seen)

    realm.seen.clear()
    bound = Settings.from_env({**env, "FMA_REGISTRY_HOSTS": f"{bearer.host},{realm.host}"})
    with RegistryAPI(bearer.host, bound) as api:
        ask(api)
    assert realm.seen and all(auth.startswith("Basic ") for _, auth in realm.seen)


# -- 4. and 5. inputs: a workspace is a name, a source URL carries no secret ---------------------


def test_workdir_etc_is_refused_in_one_line() -> None:
    """--workdir /etc: exit 2, one line, before anything runs."""
    done = fma_release("run", "v0.3.1", "--source", "/nonexistent", "--workdir", "/etc", env={})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fma-release: error: workdir '/etc' is not a workspace name: give a name (letters, digits, '.', '_', "
        "'-'; up to 64) and the workspace is <state dir>/workspaces/<name>; paths are refused"]
    assert Path("/etc/passwd").is_file()


def test_a_token_in_the_source_url_is_refused_and_stored_nowhere(registry: RegistryProcess, tmp_path: Path) -> None:
    """A source URL with a token: exit 2 with one line saying where credentials come from; the token is in no
    output, no log file, no flow run's parameters in the Prefect server, and nowhere in the registry."""
    token = "ghp_" + uuid.uuid4().hex
    state = tmp_path / "state"
    source = f"https://x-access-token:{token}@github.com/o/r.git"
    done = fma_release("run", "v0.3.1", "--source", source, "--registry", f"{registry.host}/tokens",
                       env={"FMA_STATE_DIR": str(state)})
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "carries credentials: give it without them; credentials come from the release host's environment" in line
    assert token not in done.stdout + done.stderr
    assert not any(token in p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())
    runs = prefect_api.post(f"{os.environ['PREFECT_API_URL']}/flow_runs/filter",
                            {"limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    assert token not in json.dumps(runs)
    catalog = requests.get(f"{registry.url}/v2/_catalog", timeout=10).json()
    assert token not in json.dumps(catalog) and not any(r.startswith("tokens") for r in catalog["repositories"])
