"""Summary text, artifact keys, chart references and rendered-image checks."""

from __future__ import annotations

import helm_python as helm
import pytest

from tasks.core.errors import ChartError
from tasks.core.project import PROJECT_ROOT
from tasks.helm.chart import install_command, rendered_images
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
