"""The release request is validated once from the flow's parameters; each run owns its caches."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, InvalidTagError, RegistryError
from tasks.run.context import ReleaseRequest, RunContext, RunServices
from tasks.run.settings import Settings

PARAMS = {"tag": "v0.3.1", "source": "/src", "registry": "reg.example/fma"}


def test_request_from_parameters_fills_the_defaults() -> None:
    """Chart remote, retry policy and version come out of the parameters the UI form has."""
    request = ReleaseRequest.from_parameters({**PARAMS, "push_attempts": 3, "retry_base_delay": 0.5})
    assert request.chart_remote == "oci://reg.example/fma/charts"
    assert request.retry.attempts == 3 and request.retry.delays == [0.5, 1.0]
    assert request.version.version == "0.3.1" and not request.version.prerelease
    assert request.workdir is None and not request.dry_run


@pytest.mark.parametrize(
    ("extra", "error", "text"),
    [
        ({"tag": "v1.4"}, InvalidTagError, "invalid release tag"),
        ({"push_attempts": 0}, ConfigError, "--push-attempts"),
        ({"retry_base_delay": -1}, ConfigError, "--retry-delay"),
        ({"config": "/no/such/release.yaml"}, ConfigError, "cannot read release config"),
        ({"chart_registry": "https://x"}, Exception, "must start with oci://"),
    ],
)
def test_bad_parameters_fail_before_anything_runs(extra: dict[str, object], error: type[Exception], text: str) -> None:
    """Each bad parameter is one error naming it."""
    with pytest.raises(error, match=text):
        ReleaseRequest.from_parameters({**PARAMS, **extra})


def test_settings_are_read_once_from_the_given_environment(tmp_path: Path) -> None:
    """The environment of the run's start decides; secrets stay masked in the repr."""
    settings = Settings.from_env({"DOCKER_HOST": "tcp://b:2376", "FMA_REGISTRY_USERNAME": "bot",
                                  "FMA_REGISTRY_PASSWORD": "pa55-word-x", "FMA_STATE_DIR": str(tmp_path),
                                  "FMA_REGISTRY_HOSTS": "ghcr.io, 127.0.0.1:5000"})
    assert settings.docker_host == "tcp://b:2376" and settings.state_dir == tmp_path
    creds = settings.credentials("ghcr.io")
    assert creds is not None and creds.password.get_secret_value() == "pa55-word-x"
    assert settings.credentials("127.0.0.1:5000") is creds
    assert settings.credentials("evil.example") is None and settings.credentials("127.0.0.1:5001") is None
    assert "pa55-word-x" not in repr(settings)
    assert Settings.from_env({}).credentials("ghcr.io") is None


def test_credentials_bound_to_no_host_are_refused() -> None:
    """A user and password without FMA_REGISTRY_HOSTS: one line naming the variable, never the password."""
    settings = Settings.from_env({"FMA_REGISTRY_USERNAME": "bot", "FMA_REGISTRY_PASSWORD": "pa55-word-y"})
    with pytest.raises(RegistryError, match="set FMA_REGISTRY_HOSTS") as caught:
        settings.credentials("ghcr.io")
    assert "pa55-word-y" not in str(caught.value)


@pytest.mark.parametrize("workdir", ["/etc", "../x", "a/b", "..", ".", "x" * 65, "/tmp/w"])
def test_a_workdir_that_is_not_a_name_is_refused(workdir: str) -> None:
    """workdir names a workspace under the state dir; any path is refused before anything runs."""
    with pytest.raises(ConfigError, match="is not a workspace name"):
        ReleaseRequest.from_parameters({**PARAMS, "workdir": workdir})


def test_a_workspace_is_under_the_state_dir(tmp_path: Path) -> None:
    """A named workspace and a run's own both live in <state dir>/workspaces."""
    request = ReleaseRequest.from_parameters({**PARAMS, "workdir": "nightly-1"})
    services = RunServices.from_settings(Settings(state_dir=tmp_path))
    run = RunContext(request, services)
    assert run.open_workspace() == tmp_path / "workspaces" / "nightly-1" and not run.own_workspace
    own = RunContext(ReleaseRequest.from_parameters(PARAMS), services).open_workspace()
    assert own.parent == tmp_path / "workspaces" and own.name.startswith("v0.3.1-")


@pytest.mark.parametrize("source", [
    "https://x-access-token:ghp_abcdefSECRET@github.com/o/r.git",
    "https://ghp_abcdefSECRET@github.com/o/r.git",
    "http://user:pw@example.com/r.git",
    "ssh://git:pw@example.com/r.git",
])
def test_a_source_url_with_credentials_is_refused_without_showing_them(source: str) -> None:
    """Credentials in the source URL: one line saying where they come from instead; the secret is masked."""
    with pytest.raises(ConfigError, match="carries credentials: give it without them") as caught:
        ReleaseRequest.from_parameters({**PARAMS, "source": source})
    assert "SECRET" not in str(caught.value) and ":pw@" not in str(caught.value)


@pytest.mark.parametrize("source", [
    "https://github.com/o/r.git", "ssh://git@github.com/o/r.git", "git@github.com:o/r.git", "/src", "file:///src",
])
def test_a_source_without_credentials_passes(source: str) -> None:
    """URLs without secrets (an ssh user names no secret) and paths are taken as they are."""
    assert ReleaseRequest.from_parameters({**PARAMS, "source": source}).source == source


def test_each_run_owns_its_caches_and_a_copy_in_another_process_starts_empty() -> None:
    """Two runs never share engine or registry caches; a pickled run keeps its settings only."""
    request = ReleaseRequest.from_parameters(PARAMS)
    one = RunContext(request, RunServices.from_settings(Settings()))
    two = RunContext(request, RunServices.from_settings(Settings()))
    assert one.engines is not two.engines and one.registries.schemes is not two.registries.schemes
    one.registries.schemes._known["127.0.0.1:5000"] = "http"
    assert "127.0.0.1:5000" not in two.registries.schemes._known
    copy = pickle.loads(pickle.dumps(one))  # noqa: S301 - our own bytes, as a Dask worker gets them
    assert copy.request == request and copy.settings == one.settings
    assert copy.registries.schemes._known == {}
