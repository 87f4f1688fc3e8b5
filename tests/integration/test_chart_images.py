"""A chart's images: the release's own must be exactly what it publishes; others are external, listed and
allowed unless the release config asks for digests or denies them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from flows.release import release
from tasks.core.errors import ChartError
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration

IMAGES = ("dual-pods-controller", "launcher-populator")
PINNED = "busybox:1.38.0@sha256:" + "ab" * 32


def with_pod_image(image: str) -> Callable[[Path], None]:
    """A change to the source's chart: one more Deployment, running ``image``."""

    def mutate(repo: Path) -> None:
        (repo / "charts/fma-controllers/templates/inspector.yaml").write_text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-inspector\n"
            "spec:\n  replicas: 0\n  selector:\n    matchLabels: {app: inspector}\n  template:\n"
            "    metadata:\n      labels: {app: inspector}\n    spec:\n      containers:\n"
            f"      - name: inspector\n        image: \"{image}\"\n"
        )

    return mutate


PROXY = "quay.io/brancz/kube-rbac-proxy:v0.18.1"
SWITCH = "dualPodsController.secureMetrics=true"


def with_switched_sidecar(repo: Path) -> None:
    """A change to the source's chart: a values switch, off by default, that adds a third-party sidecar."""
    values = repo / "charts/fma-controllers/values.yaml"
    values.write_text(values.read_text().replace(
        "  debugAcceleratorMemory: false\n",
        f"  debugAcceleratorMemory: false\n  # Serve metrics through a proxy.\n  secureMetrics: false\n"
        f"  metricsProxyImage: {PROXY}\n", 1))
    template = repo / "charts/fma-controllers/templates/dual-pods-controller.yaml"
    text = template.read_text()
    marker = "      containers:\n"
    assert marker in text
    template.write_text(text.replace(marker, marker + (
        "        {{- if .Values.dualPodsController.secureMetrics }}\n"
        "        - name: metrics-proxy\n"
        "          image: {{ .Values.dualPodsController.metricsProxyImage | quote }}\n"
        "        {{- end }}\n"), 1))


def run(src: SampleSource, reg: str, policy: str = "") -> dict[str, Any]:
    if policy:
        src.config.write_text(src.config.read_text() + f"external_images: {policy}\n")
    return release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config),
                   retry_base_delay=0.1).summary()


def nothing_pushed(registry: RegistryProcess, namespace: str) -> bool:
    with RegistryAPI(registry.host) as api:
        return all(api.tags(f"{namespace}/{name}") == [] for name in (*IMAGES, "charts/fma-controllers"))


def test_an_unpinned_third_party_image_is_listed_with_a_warning(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], events: list[tuple[str, str, str]],
) -> None:
    """busybox:1.38.0 in the chart: released, listed as external and unpinned, one warning line."""
    src = sample(images=IMAGES, chart_from="source", mutate=with_pod_image("busybox:1.38.0"))
    summary = run(src, f"{registry.host}/{namespace}")
    assert summary["external_images"] == [{"chart": "fma-controllers", "image": "busybox:1.38.0", "pinned": False,
                                           "switches": []}]
    warnings = [detail for item, state, detail in events if state == "warning"]
    unsigned = [w for w in warnings if w.startswith("unsigned: ")]  # no key here: said once, on its own line
    warnings = [w for w in warnings if w not in unsigned]
    assert len(unsigned) == 1
    assert len(warnings) == 1 and "busybox:1.38.0" in warnings[0] and "not pinned by digest" in warnings[0]
    assert summary["charts"][0]["digest"].startswith("sha256:")


def test_require_digest_refuses_an_unpinned_image_before_any_push(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """external_images: require-digest: the release fails naming the image and the fix; nothing is pushed."""
    src = sample(images=IMAGES, chart_from="source", mutate=with_pod_image("busybox:1.38.0"))
    with pytest.raises(ChartError) as caught:
        run(src, f"{registry.host}/{namespace}", policy="require-digest")
    assert "busybox:1.38.0" in str(caught.value) and "pin each by digest" in str(caught.value)
    assert nothing_pushed(registry, namespace)


def test_require_digest_lets_a_pinned_image_through(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """A third-party image pinned by digest passes require-digest and is listed as pinned."""
    src = sample(images=IMAGES, chart_from="source", mutate=with_pod_image(PINNED))
    summary = run(src, f"{registry.host}/{namespace}", policy="require-digest")
    assert summary["external_images"] == [{"chart": "fma-controllers", "image": PINNED, "pinned": True, "switches": []}]


def test_the_releases_own_image_with_a_stale_tag_fails_before_any_push(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """<registry>/dual-pods-controller:latest in the chart is a mistake, not an external image."""
    reg = f"{registry.host}/{namespace}"
    src = sample(images=IMAGES, chart_from="source", mutate=with_pod_image(f"{reg}/dual-pods-controller:latest"))
    with pytest.raises(ChartError) as caught:
        run(src, reg)
    assert f"{reg}/dual-pods-controller:latest" in str(caught.value)
    assert f"this release publishes {reg}/dual-pods-controller:v0.3.1" in str(caught.value)
    assert nothing_pushed(registry, namespace)


def test_an_image_only_a_values_switch_renders_is_listed_with_its_switch(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """The chart's defaults use only the release's images; its secureMetrics switch adds a sidecar: the summary
    lists the sidecar with that switch, in the JSON and the markdown."""
    src = sample(images=IMAGES, chart_from="source", mutate=with_switched_sidecar)
    summary = run(src, f"{registry.host}/{namespace}")
    assert summary["external_images"] == [{"chart": "fma-controllers", "image": PROXY, "pinned": False,
                                           "switches": [SWITCH]}]
    from tasks.run.result import ReleaseResult
    from tasks.summary import render_summary

    assert f"| fma-controllers | `{PROXY}` | no | `{SWITCH}` |" in render_summary(ReleaseResult.model_validate(summary))


def test_deny_refuses_an_image_behind_a_switch_before_any_push_naming_the_switch(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """external_images: deny, and an image only the secureMetrics switch renders: the release fails in one line
    naming the image and the switch; no image and no chart reaches the registry."""
    src = sample(images=IMAGES, chart_from="source", mutate=with_switched_sidecar)
    with pytest.raises(ChartError) as caught:
        run(src, f"{registry.host}/{namespace}", policy="deny")
    message = str(caught.value)
    assert f"{PROXY} (with {SWITCH})" in message and "external_images: allow" in message and "\n" not in message
    assert nothing_pushed(registry, namespace)
