"""Release config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.core.errors import ConfigError
from tasks.run.config import DEFAULT_CONFIG, load_config, parse_config

DOCUMENTED = """
images:                 # built in parallel, pushed as <registry>/<name>:<tag>
  - name: requester
    dockerfile: dockerfiles/Dockerfile.requester   # relative to the source checkout
    context: .                                     # relative to the source checkout (default ".")
    build_args: {}                                 # optional
charts:                 # packaged and pushed to oci://<registry>/charts
  - path: charts/fma-controllers
    from: source        # "source": the checkout at the tag; "project": this repository's charts/
"""


def test_documented_schema_is_accepted_as_written() -> None:
    """The shared schema, comments and all, validates unchanged."""
    config = parse_config(DOCUMENTED)
    assert config.images[0].name == "requester"
    assert config.images[0].context == "."
    assert config.charts[0].origin == "source"


def test_default_config_describes_fma() -> None:
    """The project's release.yaml has FMA's four images and its chart from this project."""
    config = load_config(None)
    assert [i.name for i in config.images] == [
        "dual-pods-controller", "launcher-populator", "launcher", "requester"
    ]
    assert [(c.path, c.origin) for c in config.charts] == [("charts/*", "source")]
    assert config.external_images == "allow"
    assert DEFAULT_CONFIG.is_file()


@pytest.mark.parametrize("text", ["images: []\ncharts: []\n", "charts: []\n", "images: []\n", ""])
def test_empty_lists_are_allowed(text: str) -> None:
    """Either list may be empty (an images-only or an empty release config)."""
    config = parse_config(text)
    assert config.charts == ()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("images: [", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("images:\n  - name: a\n", "dockerfile"),
        ("images:\n  - name: a\n    dockerfile: D\n  - name: a\n    dockerfile: E\n", "appears twice"),
        ("images:\n  - name: a\n    dockerfile: ../D\n", "without '..'"),
        ("images:\n  - name: a\n    dockerfile: /etc/passwd\n", "without '..'"),
        ("images:\n  - name: a\n    dockerfile: D\n    context: ../..\n", "without '..'"),
        ("images:\n  - name: Bad_Name\n    dockerfile: D\n", "lowercase"),
        ("images:\n  - name: a\n    dockerfile: D\n    colour: red\n", "Extra inputs"),
        ("charts:\n  - path: c\n    from: elsewhere\n", "'source' or 'project'"),
        ("charts:\n  - path: /abs\n", "without '..'"),
        ("unknown: 1\n", "Extra inputs"),
        ("engines:\n  - name: e\n    docker_host: 10.0.0.5:2376\n", "tcp://host:2376"),
        ("engines:\n  - {name: e, docker_host: 'tcp://a:2376'}\n  - {name: e, docker_host: 'tcp://b:2376'}\n",
         "engine name appears twice"),
        ("engines:\n  - {name: e, docker_host: 'tcp://a:2376', max_builds: 0}\n", "greater than or equal to 1"),
        ("images:\n  - {name: a, dockerfile: D, engine: elsewhere}\n", "not under 'engines'"),
    ],
)
def test_malformed_configs_fail_in_one_line(text: str, needle: str) -> None:
    """Each malformed config is a ConfigError whose one line names the problem."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file_names_the_fix(tmp_path: object) -> None:
    """An unreadable config file says which and how to fix it."""
    with pytest.raises(ConfigError, match="pass an existing file with --config"):
        load_config("/nonexistent/release.yaml")


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._/ AZ", min_size=0, max_size=12)


@given(st.lists(st.fixed_dictionaries({"name": _names, "dockerfile": _names}), max_size=4))
def test_generated_configs_validate_or_fail_cleanly(images: list[dict[str, str]]) -> None:
    """Arbitrary image entries either validate into unique, relative entries or raise ConfigError."""
    import yaml

    try:
        config = parse_config(yaml.safe_dump({"images": images}))
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message
        return
    names = [i.name for i in config.images]
    assert len(names) == len(set(names))
    for image in config.images:
        assert not image.dockerfile.startswith("/") and ".." not in image.dockerfile.split("/")


KO = "images:\n  - name: ctl\n    builder: ko\n    main: ./cmd/ctl\n"


@pytest.mark.parametrize(
    ("cover", "exclude"),
    [
        ("cover: {exclude: [pkg/generated/]}", ("pkg/generated",)),
        ("cover:\n      exclude: [./pkg/generated/..., internal/fake]", ("pkg/generated", "internal/fake")),
        ("cover: true", ()),
        ("cover: {}", ()),
        ("cover: {exclude: null}", ()),
    ],
)
def test_cover_names_module_directories_to_leave_out(cover: str, exclude: tuple[str, ...]) -> None:
    """cover takes directories of the module as written (./, a trailing / or /... dropped); true covers all."""
    (image,) = parse_config(f"{KO}    {cover}\n").images
    assert image.cover is not None and image.cover.exclude == exclude


@pytest.mark.parametrize("cover", ["", "cover: false\n", "cover: null\n"])
def test_no_cover_is_a_plain_build(cover: str) -> None:
    """Without cover (or cover: false) the image is built without coverage."""
    assert parse_config(f"{KO}    {cover}").images[0].cover is None


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (f"{KO}    cover:\n      exclude: [../x]\n", 6, "without '..'"),
        (f"{KO}    cover: {{exclude: pkg/generated/}}\n", 5, "exclude must be a list, e.g. [pkg/generated/]"),
        (f"{KO}    cover: {{exclude: ['pkg/*']}}\n", 5, "must name a directory of the Go module"),
        (f"{KO}    cover: {{exclude: [./]}}\n", 5, "must name a directory of the Go module"),
        (f"{KO}    cover: {{exlude: [pkg]}}\n", 5, "Extra inputs"),
        (f"{KO}    cover: 3\n", 5, "cover must be true, or a mapping such as {exclude: [pkg/generated/]}"),
        ("images:\n  - name: a\n    dockerfile: D\n    cover: true\n", 4, "needs builder: ko"),
        (f"{KO}    goflags: [-cover]\n    cover: true\n", 6, "remove -cover from goflags"),
        (f"{KO}    goflags: ['-coverpkg=./...']\n    cover: true\n", 6, "remove -coverpkg=./... from goflags"),
    ],
)
def test_a_bad_cover_names_the_file_line_and_the_fix(tmp_path: Path, text: str, line: int, needle: str) -> None:
    """A malformed cover is one line naming release.yaml:<line> where it is written, what is wrong and the fix."""
    config = tmp_path / "release.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert message.startswith(f"release config {config}:{line}: images.0")
    assert needle in message and "\n" not in message


def test_cover_may_come_with_other_goflags() -> None:
    """-covermode and other flags stay the config's own beside cover."""
    (image,) = parse_config(f"{KO}    goflags: ['-covermode=atomic', '-tags=release']\n    cover: true\n").images
    assert image.goflags == ("-covermode=atomic", "-tags=release") and image.cover is not None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("images:\n  - name: a\n    dockerfile: D\n  - name: Bad_Name\n    dockerfile: E\n", 4),
        ("charts:\n  - path: c\n    from: elsewhere\n", 3),
        ("images:\n  - name: a\n", 2),  # a missing field: the entry that lacks it
        ("external_images: maybe\n", 1),
    ],
)
def test_every_invalid_field_names_its_line(text: str, line: int) -> None:
    """Any field the config gets wrong is named with the line it is written on."""
    with pytest.raises(ConfigError, match=rf"^release config, line {line}: "):
        parse_config(text)


def test_the_default_config_builds_dual_pods_controller_for_coverage_as_upstream() -> None:
    """release.yaml asks for coverage on dual-pods-controller only, leaving pkg/generated/ out."""
    covered = {i.name: i.cover.exclude for i in load_config(None).images if i.cover is not None}
    assert covered == {"dual-pods-controller": ("pkg/generated",)}
