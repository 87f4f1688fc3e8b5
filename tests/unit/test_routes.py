"""The deployment routes kept apart (pure decisions), the watcher's one registry setting, and the stand-in
service manager's reading of a unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.units import command_line, parse_unit, unit_environment
from flows.routes import Deployed, Trigger, serve_refusal, taken_over, triggers_to_remove
from flows.watch import ReleaseTarget
from tasks.run.options import DEFAULT_REGISTRY

POOLED = Deployed("publish-release/publish-release", "d1", "fma-release")
SERVED = Deployed("publish-release/publish-release", "d2", None)


def test_serve_refuses_only_over_a_work_pool_deployment() -> None:
    assert serve_refusal([], "http://s/api") is None
    assert serve_refusal([SERVED], "http://s/api") is None  # its own, from an earlier serve
    message = serve_refusal([SERVED, POOLED], "http://s/api")
    assert message is not None and "\n" not in message
    assert "belongs to the work pool fma-release" in message and "routes remove pool" in message


def test_taken_over_names_only_serve_s_own_deployments_now_in_a_pool() -> None:
    assert taken_over([POOLED], ["d2"]) is None  # not one serve registered
    assert taken_over([SERVED], ["d2"]) is None
    moved = Deployed(SERVED.name, "d2", "team-pool")
    assert taken_over([moved], ["d2"]) == moved


@pytest.mark.parametrize(("trigger", "chosen"), [
    (Trigger("a1", "publish-release on github.release.published", ("d1",), True), True),  # runs a removed one
    (Trigger("a2", "notify", ("d1",), False), True),  # any automation that runs a removed deployment
    (Trigger("a3", "publish-release on github.release.published", ("gone",), True), True),  # left behind earlier
    (Trigger("a4", "someone else's", ("gone",), False), False),  # not a release trigger: not ours to judge
    (Trigger("a5", "publish-release on github.release.published", ("d9",), True), False),  # another live one
])
def test_triggers_removed_with_a_route(trigger: Trigger, chosen: bool) -> None:
    assert (trigger in triggers_to_remove([POOLED], [trigger], existing_ids=["d1", "d9"])) is chosen


def test_the_watcher_reads_the_release_deployment_s_registry() -> None:
    target = ReleaseTarget.from_parameters("d1", {"registry": "r.example/fma", "chart_registry": "oci://c/charts"})
    assert (target.registry, target.chart_registry) == ("r.example/fma", "oci://c/charts")
    default = ReleaseTarget.from_parameters("d1", {"source": "x"})
    assert (default.registry, default.chart_registry) == (DEFAULT_REGISTRY, None)


UNIT = """[Unit]
Description=x
[Service]
Type=simple
Environment=PORT=4200 HOST=127.0.0.1
Environment="GREETING=a b"
EnvironmentFile=-{env}
ExecStart=/bin/prog --port ${{PORT}} --host=${{HOST}} $EXTRA \\
    --last
Restart=on-failure
RestartSec=2
[Install]
WantedBy=multi-user.target
"""


def test_a_unit_is_read_as_systemd_reads_it(tmp_path: Path) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("# a comment\nPORT=4300\nEXTRA=--one --two\n")
    unit = parse_unit(UNIT.format(env=env_file))
    assert (unit.restart, unit.restart_sec) == ("on-failure", 2.0)
    env = unit_environment(unit, {})
    assert env["PORT"] == "4300" and env["GREETING"] == "a b"  # the file wins over Environment=
    assert command_line(unit, env) == ["/bin/prog", "--port", "4300", "--host=127.0.0.1", "--one", "--two", "--last"]
    missing = parse_unit(UNIT.format(env=tmp_path / "absent.env"))
    assert unit_environment(missing, {})["PORT"] == "4200"  # "-": an optional file


def test_a_unit_setting_the_stand_in_would_not_honour_is_refused() -> None:
    with pytest.raises(ValueError, match="does not honour User="):
        parse_unit("[Service]\nUser=nobody\nExecStart=/bin/true\n")
