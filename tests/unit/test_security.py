"""The pure parts of the release host's boundaries: what a child's environment keeps, which links and
.ko.yaml settings a source may have, whose credentials go where, what verify calls a swap."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from pydantic import SecretStr

from flows.triggers import Deliveries
from tasks.builders.koconfig import parse_ko_config, source_settings_refused
from tasks.core.cmd import child_env
from tasks.core.errors import ConfigError, SourceError
from tasks.core.links import check_links, link_escape
from tasks.core.redact import register, strip_userinfo
from tasks.forge.github import check_api_url
from tasks.oci.auth import RegistryCredentials
from tasks.supplychain.verify import Check, _one_origin, provenance_mismatch


def test_a_child_gets_no_secret_but_the_ones_it_is_given() -> None:
    """Secret names, secret-looking names and registered secret values are dropped; `secrets` are added."""
    register("value-registered-as-secret")
    base = {"PATH": "/bin", "FMA_REGISTRY_PASSWORD": "p", "GITHUB_TOKEN": "t", "GITHUB_WEBHOOK_SECRET": "w",
            "FMA_SIGNING_PASSWORD": "s", "MY_API_TOKEN": "x", "HARMLESS": "value-registered-as-secret",
            "DOCKER_CONFIG": "/root/.docker", "HOME": "/root"}
    env = child_env(base, {"COSIGN_PASSWORD": "given"})
    assert env == {"PATH": "/bin", "DOCKER_CONFIG": "/root/.docker", "HOME": "/root", "COSIGN_PASSWORD": "given"}


@pytest.mark.parametrize(("link", "target", "refused"), [
    ("/src/charts/c/files/environ", "/proc/self/environ", "points into /proc"),
    ("/src/charts/c/files/null", "../../../../dev/null", "points into /dev"),
    ("/src/charts/c/files/outside", "../../../../etc/passwd", "points outside the checkout"),
    ("/src/charts/c/files/abs", "/src-other/x", "points outside the checkout"),
    ("/src/charts/c/files/sibling", "../templates/a.yaml", ""),
    ("/src/charts/c/files/abs-inside", "/src/README.md", ""),
    ("/src/charts/c/files/self", ".", ""),
])
def test_a_link_may_point_only_inside_the_checkout(link: str, target: str, refused: str) -> None:
    """A link's target is resolved from its directory: outside the tree, /proc or /dev is refused."""
    assert refused in link_escape(PurePosixPath(link), target, PurePosixPath("/src"))
    assert bool(link_escape(PurePosixPath(link), target, PurePosixPath("/src"))) == bool(refused)


def test_check_links_names_the_link_and_never_follows_it(tmp_path: Path) -> None:
    """A chain of links is judged link by link; the error names the offending link relative to the root."""
    root = tmp_path / "src"
    (root / "chart" / "files").mkdir(parents=True)
    (root / "chart" / "files" / "ok").symlink_to("../Chart.yaml")
    check_links(root / "chart", root, "chart c")
    (root / "chart" / "files" / "hop").symlink_to("../../escape")
    (root / "escape").symlink_to("/proc/self/environ")
    with pytest.raises(SourceError, match=r"chart c: the link files/hop points outside the chart"):
        check_links(root / "chart", root / "chart", "chart c", scope="the chart")
    with pytest.raises(SourceError, match=r"the link escape points into /proc"):
        check_links(root, root, "source")


@pytest.mark.parametrize(("text", "refused"), [
    ("builds:\n- main: ./cmd/x\n  env: [CGO_ENABLED=1, \"CC=sh -c 'id'\"]\n", "sets CGO_ENABLED"),
    ("builds:\n- main: ./cmd/x\n  env: [\"CC=sh -c 'id'\"]\n", "sets CC"),
    ("builds:\n- main: ./cmd/x\n  env: [GOFLAGS=-toolexec=sh]\n", "sets GOFLAGS"),
    ("defaultEnv: [CXX=evil]\n", "sets CXX"),
    ("builds:\n- main: ./cmd/x\n  ldflags: [\"-linkmode=external -extld=sh\"]\n", "passes -linkmode"),
    ("builds:\n- main: ./cmd/x\n  flags: [\"-ldflags=-extld=/tmp/x\"]\n", "passes -extld"),
    ("defaultFlags: [--toolexec, sh]\n", "passes -toolexec"),
    ("builds:\n- main: ./cmd/x\n  env: [CGO_ENABLED=0, GOAMD64=v3]\n  ldflags: [\"-s -w -X main.v=tool-exec\"]\n", ""),
    ("defaultBaseImage: cgr.dev/chainguard/static\n", ""),
])
def test_a_ko_config_may_not_redirect_the_toolchain(text: str, refused: str) -> None:
    """CC, CGO and tool flags from the source are refused by name; the architecture knobs and -X pass."""
    found = source_settings_refused(parse_ko_config(text), ".ko.yaml")
    assert (refused in found) if refused else found == ""


def test_credentials_are_bound_to_their_hosts() -> None:
    """Docker Hub's aliases are one host; any other host, or another port, gets nothing."""
    creds = RegistryCredentials("bot", SecretStr("pw"), hosts=("docker.io", "127.0.0.1:5000"))
    assert creds.bound_to("registry-1.docker.io") and creds.bound_to("index.docker.io")
    assert creds.bound_to("127.0.0.1:5000") and not creds.bound_to("127.0.0.1:5001")
    assert not creds.bound_to("ghcr.io") and not creds.bound_to("docker.io.evil.example")


def test_a_docker_config_holds_only_the_bound_hosts(tmp_path: Path) -> None:
    """Asked for two hosts, the config names only the one the credentials belong to."""
    creds = RegistryCredentials("bot", SecretStr("pw"), hosts=("ghcr.io",))
    directory = creds.docker_config(tmp_path / "d", "ghcr.io", "evil.example")
    text = (directory / "config.json").read_text()
    assert '"ghcr.io"' in text and "evil.example" not in text
    assert os.stat(directory / "config.json").st_mode & 0o077 == 0


def test_the_token_goes_only_to_the_configured_api() -> None:
    """Another API URL is refused in one line naming both, before any token is read."""
    check_api_url("https://api.github.com/", "https://api.github.com")
    with pytest.raises(ConfigError, match=r"the GitHub API http://evil\.example is not the one"):
        check_api_url("http://evil.example", "https://api.github.com")


def test_strip_userinfo_removes_credentials_from_a_url() -> None:
    """https://user:token@host/x becomes https://host/x; a path is untouched."""
    assert strip_userinfo("https://x-access-token:ghp_1@github.com/o/r.git") == "https://github.com/o/r.git"
    assert strip_userinfo("/src/fma") == "/src/fma"


def _predicate(tag: str, image: str, source: str = "https://github.com/o/r.git") -> dict[str, object]:
    return {"buildDefinition": {"externalParameters": {"tag": tag, "image": image, "source": source},
                                "resolvedDependencies": [{"digest": {"gitCommit": "c" * 40}}]}}


def test_provenance_of_another_tag_image_or_source_is_a_mismatch() -> None:
    """The tag, the image's last name and the source asked for must match; the registry does not matter."""
    assert provenance_mismatch(_predicate("v0.6.4", "other.example/ns/launcher"), tag="v0.6.4", name="launcher") == ""
    swapped = provenance_mismatch(_predicate("v0.6.3", "reg/ns/launcher"), tag="v0.6.4", name="launcher")
    assert "of v0.6.3, not v0.6.4" in swapped
    assert "not launcher" in provenance_mismatch(_predicate("v0.6.4", "reg/requester"), tag="v0.6.4", name="launcher")
    assert "not https://a" in provenance_mismatch(_predicate("v0.6.4", "r/launcher"), tag="v0.6.4", name="launcher",
                                                  source="https://a")


def test_an_image_from_another_source_or_commit_fails_verify() -> None:
    """One release is one source at one commit: the odd image out fails, naming both."""
    checks = [Check(name, "sha256:x", "ok", "ok") for name in ("a", "b", "c")]
    origins = {("s", "1" * 40): ["a", "b"], ("t", "2" * 40): ["c"]}
    out = _one_origin(checks, origins)
    assert [c.provenance for c in out[:2]] == ["ok", "ok"]
    assert "of t at 222222222222, the rest of the release of s at 111111111111" in out[2].provenance


def test_announced_deliveries_survive_a_restart(tmp_path: Path) -> None:
    """A delivery kept by one receiver is a duplicate for the next one reading the same file."""
    path = tmp_path / "deliveries"
    first = Deliveries(path=path)
    assert first.claim("d-1", "o/r@v1") == ""
    first.keep("d-1")
    first.keep("../../bad id")  # not an id: never written
    second = Deliveries(path=path)
    assert second.claim("d-1", "o/r@v1") == "duplicate delivery: already handled"
    assert path.read_text() == "d-1\n"
