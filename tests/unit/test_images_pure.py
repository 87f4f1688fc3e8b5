"""Image references, labels, specs and the push-error classifier."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.builders.docker import failed_step
from tasks.builders.dockerfile import labelled_dockerfile
from tasks.core.errors import ConfigError
from tasks.run.config import DEFAULT_ENGINE, Engine, assign_engines, parse_config
from tasks.run.engines import Engines
from tasks.run.facts import Checkout
from tasks.run.plan import ImageSpec, build_order, head_start, image_ref, image_specs, oci_labels
from tasks.run.retry import RetryPolicy, is_transient_push_error


def checkout(path: Path) -> Checkout:
    return Checkout(path=path, source="https://example.invalid/fma.git", tag="v0.3.1",
                    revision="a" * 40, created="2026-11-25T10:00:00+00:00")


@pytest.mark.parametrize(
    ("registry", "name", "tag", "ref"),
    [
        ("ghcr.io/llm-d-incubation/llm-d-fast-model-actuation", "requester", "v0.3.1",
         "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/requester:v0.3.1"),
        ("127.0.0.1:5000/x/", "launcher", "v0.3.0-rc.1", "127.0.0.1:5000/x/launcher:v0.3.0-rc.1"),
    ],
)
def test_image_ref_keeps_the_v(registry: str, name: str, tag: str, ref: str) -> None:
    """<registry>/<name>:<tag>, the tag with its v, no double slash."""
    assert image_ref(registry, name, tag) == ref


def test_oci_labels() -> None:
    """The five OCI labels carry source, tagged commit, tag, commit date and name."""
    labels = oci_labels(checkout(Path("/src")), "launcher")
    assert labels == {
        "org.opencontainers.image.source": "https://example.invalid/fma.git",
        "org.opencontainers.image.revision": "a" * 40,
        "org.opencontainers.image.version": "v0.3.1",
        "org.opencontainers.image.created": "2026-11-25T10:00:00+00:00",
        "org.opencontainers.image.title": "launcher",
    }


def test_image_specs_resolve_dockerfiles_from_source_or_project(tmp_path: Path) -> None:
    """dockerfile_from picks the tree; context is always the checkout."""
    src, project = tmp_path / "src", tmp_path / "project"
    (src / "d").mkdir(parents=True)
    (project / "d").mkdir(parents=True)
    (src / "d/Dockerfile.a").write_text("FROM scratch\n")
    (project / "d/Dockerfile.b").write_text("FROM scratch\n")
    config = parse_config(
        "images:\n  - name: a\n    dockerfile: d/Dockerfile.a\n"
        "  - name: b\n    dockerfile: d/Dockerfile.b\n    dockerfile_from: project\n    build_args: {X: 1}\n"
    )
    a, b = image_specs(config, checkout(src), "reg.example/fma", project_root=project)
    assert (a.dockerfile, a.context, a.ref) == (src / "d/Dockerfile.a", src, "reg.example/fma/a:v0.3.1")
    assert (b.dockerfile, b.context, dict(b.build_args)) == (project / "d/Dockerfile.b", src, {"X": "1"})


def test_images_are_spread_over_the_engines_and_pins_are_kept(tmp_path: Path) -> None:
    """Unpinned images go to the least loaded engine; a pinned one stays where the config says."""
    (tmp_path / "D").write_text("FROM scratch\n")
    config = parse_config(
        "engines:\n  - {name: one, docker_host: 'unix:///run/one.sock', max_builds: 2}\n"
        "  - {name: two, docker_host: 'tcp://builder-2:2376', tls_cert_path: /certs}\n"
        "images:\n" + "".join(f"  - {{name: i{n}, dockerfile: D}}\n" for n in range(4))
        + "  - {name: pinned, dockerfile: D, engine: one}\n"
    )
    specs = {spec.name: spec.engine for spec in image_specs(config, checkout(tmp_path), "reg.example/fma")}
    assert specs["pinned"] == Engine(name="one", docker_host="unix:///run/one.sock", max_builds=2)
    assert specs["i0"].name == "two"  # "one" already holds the pinned image
    assert [engine.name for engine in specs.values()] == ["two", "one", "two", "one", "one"]
    assert specs["i0"].tls_cert_path == "/certs"


def test_without_engines_every_image_goes_to_the_default_engine(tmp_path: Path) -> None:
    (tmp_path / "D").write_text("FROM scratch\n")
    config = parse_config("images:\n  - {name: a, dockerfile: D}\n  - {name: b, dockerfile: D}\n")
    assert {spec.engine for spec in image_specs(config, checkout(tmp_path), "reg.example/fma")} == {DEFAULT_ENGINE}
    assert assign_engines([("a", None)], []) == {}


@given(
    pins=st.lists(st.one_of(st.none(), st.sampled_from(["e0", "e1", "e2"])), max_size=30),
    count=st.integers(min_value=1, max_value=3),
)
def test_unpinned_images_balance_the_engines(pins: list[str | None], count: int) -> None:
    """Whatever the pins, no engine ends with more than one unpinned image above the least loaded one
    unless pins alone put it there."""
    engines = [f"e{i}" for i in range(count)]
    images = [(f"i{n}", pin if pin in engines else None) for n, pin in enumerate(pins)]
    placed = assign_engines(images, engines)
    assert set(placed) == {name for name, _ in images}
    assert all(placed[name] == pin for name, pin in images if pin is not None)
    load = {engine: list(placed.values()).count(engine) for engine in engines}
    pinned = {engine: sum(1 for _, pin in images if pin == engine) for engine in engines}
    for engine in engines:
        if load[engine] > pinned[engine]:  # it received unpinned images, so it was never the most loaded
            assert load[engine] <= min(load.values()) + 1


def test_build_slot_caps_the_builds_on_one_engine() -> None:
    """max_builds=2: six builds at once go through in pairs, never more than two inside."""
    target = Engine(name="capped", docker_host="unix:///run/capped.sock", max_builds=2)
    inside, peak, lock = 0, 0, threading.Lock()
    pair = threading.Barrier(2, timeout=30)  # holders wait for each other: two must fit at once
    engines = Engines("unix:///var/run/docker.sock")

    def build() -> None:
        nonlocal inside, peak
        with engines.build_slot(target):
            with lock:
                inside += 1
                peak = max(peak, inside)
            pair.wait()
            with lock:
                inside -= 1

    threads = [threading.Thread(target=build) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
    assert not pair.broken


def test_labels_are_one_line_appended_to_the_dockerfile() -> None:
    """All labels in one LABEL instruction after the last line; quotes, escapes and $ are escaped."""
    text = "FROM scratch\nCOPY a /a"
    staged = labelled_dockerfile(text, {"org.opencontainers.image.title": "a", "odd": 'say "hi" $HOME \\ now'})
    assert staged == (
        "FROM scratch\nCOPY a /a\n"
        'LABEL "org.opencontainers.image.title"="a" "odd"="say \\"hi\\" \\$HOME \\\\ now"\n'
    )
    assert labelled_dockerfile(text, {}) == text


def test_labels_use_the_dockerfiles_escape_character() -> None:
    text = "# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\n"
    assert labelled_dockerfile(text, {"k": 'a"$b'}).endswith('LABEL "k"="a`"`$b"\n')


def test_missing_dockerfile_is_a_config_error(tmp_path: Path) -> None:
    """A Dockerfile that is not in the checkout names the image and the field to fix."""
    config = parse_config("images:\n  - name: a\n    dockerfile: nope/Dockerfile\n")
    with pytest.raises(ConfigError, match=r"image a: dockerfile nope/Dockerfile is not in the source"):
        image_specs(config, checkout(tmp_path), "r.example/x")


def test_symlink_escaping_the_checkout_is_refused(tmp_path: Path) -> None:
    """A Dockerfile path that resolves outside the checkout (via a symlink) is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to(outside)
    config = parse_config("images:\n  - name: a\n    dockerfile: link/Dockerfile\n")
    with pytest.raises(ConfigError, match="leaves its tree"):
        image_specs(config, checkout(src), "r.example/x")


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        ("received unexpected HTTP status: 500 Internal Server Error", True),
        ("Put \"http://127.0.0.1:5000/v2/x/manifests/v1\": EOF", True),
        ("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", True),
        ("net/http: TLS handshake timeout", True),
        ("toomanyrequests: retry later", True),
        ("unauthorized: authentication required", False),
        ("denied: requested access to the resource is denied", False),
        ("received unexpected HTTP status: 403 Forbidden", False),
        ("name unknown: repository name not known to registry", False),
        ("manifest invalid: manifest invalid", False),
    ],
)
def test_push_error_classifier(message: str, transient: bool) -> None:
    """5xx, 429, dropped connections and timeouts are transient; auth and denial never are."""
    assert is_transient_push_error(message) is transient


def test_failed_step_is_the_last_step_line() -> None:
    """The step reported for a failing build is the last 'Step N/M' the builder printed."""
    lines = ["Step 1/3 : FROM scratch", " ---> x", "Step 3/3 : RUN false", "oops"]
    assert failed_step(lines) == "Step 3/3 : RUN false"
    assert failed_step(["no steps"]) == ""


def test_retry_policy_is_bounded_exponential() -> None:
    """Delays double from the base and stop at the cap; attempts count the first try."""
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=8.0)
    assert policy.delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.task_options()["retries"] == 5
    with pytest.raises(ValueError, match="attempts >= 1"):
        RetryPolicy(attempts=0)


def test_retry_waits_are_a_number_to_the_ui_and_doubling_to_the_engine() -> None:
    """The waits Prefect records for a task run are one number (the first wait: the UI's "Retry Delay 1s", never
    "NaNs"), while the engine takes the n-th wait for the n-th retry; they survive pickling (Dask)."""
    import pickle
    from collections.abc import Sequence

    from prefect import task
    from prefect.client.schemas.objects import TaskRunPolicy

    delay = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0).task_options()["retry_delay_seconds"]
    assert delay == 1.0 and isinstance(delay, float) and isinstance(delay, Sequence)
    assert [delay[min(n, len(delay) - 1)] for n in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]  # as the engine reads it
    recorded = TaskRunPolicy(retries=3, retry_delay=delay, retry_jitter_factor=0.5).model_dump(mode="json")
    assert recorded["retry_delay"] == 1.0

    @task(retries=3, retry_delay_seconds=delay)
    def step() -> None:
        """A task given the waits."""

    assert list(step.with_options(retries=3).retry_delay_seconds) == [1.0, 2.0, 4.0]  # type: ignore[arg-type]
    assert list(pickle.loads(pickle.dumps(delay))) == [1.0, 2.0, 4.0]  # noqa: S301 - our own bytes, just made
    assert float(RetryPolicy(attempts=1).task_options()["retry_delay_seconds"]) == 0.0


@pytest.mark.parametrize(("header", "wait"), [("2", 2.0), ("0", 0.0), ("3600", 30.0), ("", None),
                                              ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None)])
def test_retry_after_is_bounded(header: str, wait: float | None) -> None:
    """Retry-After in seconds is honoured up to a cap; dates and junk are ignored (backoff applies)."""
    from tasks.oci.registry import retry_after

    assert retry_after(header) == wait


def _ko_source(root: Path) -> Path:
    (root / "cmd/ctl").mkdir(parents=True)
    (root / "go.mod").write_text("module example.test/m\n\ngo 1.22\n")
    (root / "cmd/ctl/main.go").write_text("package main\n\nfunc main() {}\n")
    return root


def test_cover_is_part_of_a_ko_images_spec_and_fingerprint(tmp_path: Path) -> None:
    """A coverage build carries its exclusions to the builder, and each cover setting is a fingerprint of its own."""
    src = _ko_source(tmp_path)
    config = "images:\n  - name: ctl\n    builder: ko\n    main: ./cmd/ctl\n"
    variants = {
        "": (False, ()),
        "    cover: true\n": (True, ()),
        "    cover: {exclude: [pkg/generated/]}\n": (True, ("pkg/generated",)),
        "    cover: {exclude: [pkg/generated/, test]}\n": (True, ("pkg/generated", "test")),
    }
    fingerprints = set()
    for variant, (cover, exclude) in variants.items():
        (spec,) = image_specs(parse_config(config + variant), checkout(src), "r.test/fma")
        assert (spec.cover, spec.cover_exclude) == (cover, exclude)
        assert spec.labels["io.llm-d.fma-release.fingerprint"] == spec.fingerprint
        fingerprints.add(spec.fingerprint)
    assert len(fingerprints) == len(variants)


def test_a_dockerfile_images_spec_names_the_dockerfile_as_the_config_does(tmp_path: Path) -> None:
    """The spec keeps the Dockerfile's path as written in the release config (messages and provenance name it)."""
    (tmp_path / "dockerfiles").mkdir()
    (tmp_path / "dockerfiles/Dockerfile.requester").write_text("FROM scratch\n")
    config = parse_config("images:\n  - name: requester\n    dockerfile: dockerfiles/Dockerfile.requester\n")
    (spec,) = image_specs(config, checkout(tmp_path), "r.test/fma")
    assert spec.dockerfile_name == "dockerfiles/Dockerfile.requester"


def spec(name: str, platform: str = "linux/amd64", *, several: bool = False) -> ImageSpec:
    return ImageSpec(name=name, ref=f"r/{name}:v1", dockerfile=None, context=Path("."), platform=platform,
                     index_ref=f"r/{name}:v1" if several else "")


def test_builds_start_longest_first_and_only_on_a_full_measure() -> None:
    specs = [spec("controller"), spec("requester", "linux/amd64", several=True),
             spec("requester", "linux/arm64", several=True), spec("launcher")]
    measured = {"controller": 3.0, "requester linux/amd64": 2.0, "requester linux/arm64": 9.5, "launcher": 6.0}
    assert [s.label for s in build_order(specs, measured)] == [
        "requester linux/arm64", "launcher", "controller", "requester linux/amd64"]
    # a build never measured here: no basis to reorder
    assert build_order(specs, {k: v for k, v in measured.items() if k != "launcher"}) == specs
    assert build_order(specs, {}) == specs
    # ties keep the config's order
    assert build_order(specs, dict.fromkeys(measured, 1.0)) == specs


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=2, max_size=6), st.floats(min_value=0, max_value=2))
def test_the_first_build_leads_only_when_it_ends_more_than_the_lead_after_every_other(
    seconds: list[float], lead: float,
) -> None:
    specs = [spec(f"image{i}") for i in range(len(seconds))]
    measured = {s.label: t for s, t in zip(specs, seconds, strict=True)}
    order = build_order(specs, measured)
    assert [measured[s.label] for s in order] == sorted(seconds, reverse=True)
    given_lead = head_start(order, measured, lead)
    first, second = sorted(seconds, reverse=True)[:2]
    assert given_lead == (lead if lead > 0 and first - second > lead else 0.0)
    assert head_start(order[:1], measured, lead) == 0.0
    assert head_start(order, {}, lead) == 0.0


def test_the_head_start_is_half_a_second_unless_the_environment_says_otherwise() -> None:
    from tasks.run.settings import Settings

    assert Settings.from_env({}).head_start_seconds == 0.5
    assert Settings.from_env({"FMA_HEAD_START_SECONDS": "0"}).head_start_seconds == 0.0
    assert Settings.from_env({"FMA_HEAD_START_SECONDS": "1.5"}).head_start_seconds == 1.5
    for bad in ("-1", "soon", "nan"):
        refused = rf"FMA_HEAD_START_SECONDS='{bad}' is not a positive number of seconds or 0"
        with pytest.raises(ConfigError, match=refused):
            Settings.from_env({"FMA_HEAD_START_SECONDS": bad})
