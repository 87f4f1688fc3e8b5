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
    assert summary["external_images"] == [{"chart": "fma-controllers", "image": "busybox:1.38.0", "pinned": False}]
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
    assert summary["external_images"] == [{"chart": "fma-controllers", "image": PINNED, "pinned": True}]


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
