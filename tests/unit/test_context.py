"""The release request is validated once from the flow's parameters; each run owns its caches."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, InvalidTagError
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
                                  "FMA_REGISTRY_PASSWORD": "pa55-word-x", "FMA_STATE_DIR": str(tmp_path)})
    assert settings.docker_host == "tcp://b:2376" and settings.state_dir == tmp_path
    creds = settings.credentials()
    assert creds is not None and creds.password.get_secret_value() == "pa55-word-x"
    assert "pa55-word-x" not in repr(settings)
    assert Settings.from_env({}).credentials() is None


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
