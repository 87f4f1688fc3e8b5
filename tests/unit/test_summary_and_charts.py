"""Summary text, artifact keys, chart references and rendered-image checks."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest

from devkit.fma_files import CHART, INSPECTOR_IMAGE, METRICS_PROXY_IMAGE, METRICS_PROXY_SWITCH, fma_files
from tasks.core.errors import ChartError
from tasks.core.project import PROJECT_ROOT
from tasks.helm.chart import (
    install_command,
    rendered_images,
    switch_name,
    switch_renders,
    switch_values,
    value_switches,
)
from tasks.oci.references import chart_remote
from tasks.run.result import ReleaseResult
from tasks.summary import artifact_key, render_summary

SUMMARY = {
    "tag": "v0.3.1", "version": "0.3.1", "prerelease": False, "registry": "reg.example/fma",
    "source_revision": "c" * 40, "dry_run": False, "notes": [],
    "images": [
        {"name": "requester", "ref": "reg.example/fma/requester:v0.3.1", "digest": "sha256:" + "1" * 64},
        {"name": "launcher", "ref": "reg.example/fma/launcher:v0.3.1", "digest": "sha256:" + "2" * 64},
    ],
    "charts": [{"name": "fma-controllers", "ref": "oci://reg.example/fma/charts/fma-controllers",
                "version": "0.3.1", "digest": "sha256:" + "3" * 64}],
}


def test_summary_lists_every_reference_digest_and_the_install_command() -> None:
    """Each image ref with its digest, the chart ref/version/digest and helm install appear."""
    text = render_summary(ReleaseResult.model_validate(SUMMARY))
    for image in SUMMARY["images"]:
        # A summary recorded before platforms existed has an empty platform column.
        assert f"| {image['name']} |  | `{image['ref']}` | `{image['digest']}` |" in text
    assert "| fma-controllers | `oci://reg.example/fma/charts/fma-controllers` | 0.3.1 | `sha256:333" in text
    assert "helm install fma oci://reg.example/fma/charts/fma-controllers --version 0.3.1" in text
    assert "c" * 40 in text
    assert text.startswith("# v0.3.1 (release)")


def test_summary_of_a_prerelease_dry_run_without_charts() -> None:
    """A pre-release dry run says so and has no install command."""
    text = render_summary(ReleaseResult.model_validate({**SUMMARY, "prerelease": True, "dry_run": True, "charts": []}))
    assert text.startswith("# v0.3.1 (pre-release, dry run: nothing was pushed)")
    assert "helm install" not in text and "(no chart in this release)" in text


@pytest.mark.parametrize(
    ("version", "key"),
    [("0.3.1", "release-0-3-1"), ("0.3.0-rc.1", "release-0-3-0-rc-1"), ("1.0.0-Beta.2", "release-1-0-0-beta-2")],
)
def test_artifact_key_is_lowercase_digits_dashes(version: str, key: str) -> None:
    """Artifact keys only use what Prefect allows."""
    assert artifact_key(version) == key


def test_chart_remote_defaults_and_override() -> None:
    """Charts go to oci://<registry>/charts unless told otherwise; other schemes are refused."""
    assert chart_remote("ghcr.io/o/r") == "oci://ghcr.io/o/r/charts"
    assert chart_remote("ghcr.io/o/r", "oci://other.example/charts/") == "oci://other.example/charts"
    with pytest.raises(ChartError, match="must start with oci://"):
        chart_remote("ghcr.io/o/r", "https://charts.example")
    assert install_command("oci://h/c", "fma-controllers", "1.0.0") == (
        "helm install fma oci://h/c/fma-controllers --version 1.0.0"
    )


def test_project_chart_renders_exactly_the_two_controller_images() -> None:
    """The shipped chart, rendered with release values, references the two controller images."""
    chart = helm.Chart.load(PROJECT_ROOT / "charts/fma-controllers")
    try:
        manifests = chart.render(
            {"global": {"imageRegistry": "reg.example/fma", "imageTag": "v0.3.1"}},
            name="fma", namespace="default", is_install=True,
        )
    finally:
        chart.close()
    assert rendered_images(manifests) == {
        "reg.example/fma/dual-pods-controller:v0.3.1",
        "reg.example/fma/launcher-populator:v0.3.1",
    }


def test_rendered_images_are_every_container_image() -> None:
    """Containers and init containers are read from the rendered manifests; invalid YAML is refused."""
    manifests = {"t.yaml": "kind: Pod\nspec:\n  initContainers:\n  - image: a:1\n  containers:\n  - image: b:1\n"}
    assert rendered_images(manifests) == {"a:1", "b:1"}
    with pytest.raises(ChartError, match="renders invalid YAML"):
        rendered_images({"t.yaml": "a: [\n"})


# -- values switches ------------------------------------------------------------------------------------


def test_value_switches_are_every_boolean_with_its_path() -> None:
    """Booleans at any depth are switches; strings, numbers, lists and "true" as a string are not."""
    values = {"global": {"local": False, "tag": "true", "n": 1, "deep": {"on": True}}, "enabled": True,
              "list": [True], "name": ""}
    assert sorted(value_switches(values)) == [
        (("enabled",), True), (("global", "deep", "on"), True), (("global", "local"), False)]
    assert switch_values(("global", "deep", "on"), False) == {"global": {"deep": {"on": False}}}
    assert switch_name(("global", "produceCoverdata"), True) == "global.produceCoverdata=true"
    assert switch_name(("enabled",), False) == "enabled=false"


def sample_chart(tmp_path: Path) -> Path:
    files = fma_files(ko_base="r.example/static@sha256:" + "a" * 64, builder_base="r.example/b:1",
                      runtime_base="r.example/c:1", launcher_base="r.example/l:1")
    for name, text in files.items():
        if name.startswith(CHART + "/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    return tmp_path / CHART


def test_the_fma_samples_switch_brings_in_the_metrics_proxy(tmp_path: Path) -> None:
    """The FMA-shaped chart with each boolean flipped: only secureMetrics brings in an image the defaults do not
    render (the proxy), dualPodsController.enabled=false drops the controller and its inspector."""
    chart = helm.Chart.load(sample_chart(tmp_path))
    try:
        defaults = rendered_images(chart.render(name="fma", namespace="default", is_install=True))
        switched, notes = switch_renders(chart, "fma-controllers")
    finally:
        chart.close()
    assert notes == []
    assert INSPECTOR_IMAGE in defaults and METRICS_PROXY_IMAGE not in defaults
    brought = {switch: images - defaults for switch, images in switched.items() if images - defaults}
    assert brought == {METRICS_PROXY_SWITCH: {METRICS_PROXY_IMAGE}}
    assert INSPECTOR_IMAGE not in switched["dualPodsController.enabled=false"]


def test_a_switch_under_which_the_chart_does_not_render_is_a_note(tmp_path: Path) -> None:
    """A switch that needs other values (a `required` template) is not an error: a note says its images are not
    checked; the other switches are still rendered."""
    chart_dir = sample_chart(tmp_path)
    (chart_dir / "templates/tls.yaml").write_text(
        "{{- if .Values.tls.enabled }}\napiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\n"
        "data:\n  cert: {{ required \"tls.cert is required\" .Values.tls.cert }}\n{{- end }}\n")
    with (chart_dir / "values.yaml").open("a") as values:
        values.write("tls:\n  enabled: false\n  cert: \"\"\n")
    chart = helm.Chart.load(chart_dir)
    try:
        switched, notes = switch_renders(chart, "fma-controllers")
    finally:
        chart.close()
    (note,) = notes
    assert note.startswith("chart fma-controllers does not render with tls.enabled=true (")
    assert "tls.cert is required" in note and note.endswith("the images it would use then are not checked")
    assert METRICS_PROXY_SWITCH in switched and "tls.enabled=true" not in switched


def test_summary_says_which_switch_brings_an_external_image_in() -> None:
    """Markdown: a column saying the defaults or the switch; JSON: the switches, [] for the defaults."""
    result = ReleaseResult.model_validate({**SUMMARY, "external_images": [
        {"chart": "fma-controllers", "image": "busybox:1.38.0", "pinned": False},
        {"chart": "fma-controllers", "image": METRICS_PROXY_IMAGE, "pinned": False,
         "switches": [METRICS_PROXY_SWITCH]}]})
    assert result.summary()["external_images"] == [
        {"chart": "fma-controllers", "image": "busybox:1.38.0", "pinned": False, "switches": []},
        {"chart": "fma-controllers", "image": METRICS_PROXY_IMAGE, "pinned": False,
         "switches": [METRICS_PROXY_SWITCH]}]
    text = render_summary(result)
    assert "| chart | image | pinned by digest | rendered with |" in text
    assert "| fma-controllers | `busybox:1.38.0` | no | the defaults |" in text
    assert f"| fma-controllers | `{METRICS_PROXY_IMAGE}` | no | `{METRICS_PROXY_SWITCH}` |" in text
