"""A chart of the release, pulled from the source and packaged again for the destination.

The chart's values name the registry its images come from (``global.imageRegistry``), so a chart
copied byte for byte would install the source's images. The promotion unpacks the published chart
(its files only: an archive's links, devices and paths out of it are not written), sets the values
to the destination as a release does, and checks it as a release does (lint, render, every rendered
image of the release is one the destination publishes), and also that no rendered image is still
one of the release's images at the source. Then it is packaged with the same version.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from tasks.core.errors import ChartError
from tasks.helm.chart import PackagedChart, prepare_chart, published_chart_contents
from tasks.oci.references import Reference
from tasks.oci.registry import RegistryAPI
from tasks.promote.context import PromotionRequest
from tasks.promote.plan import left_at_source
from tasks.run.plan import image_ref


def unpack_chart(files: dict[str, bytes], into: Path) -> Path:
    """Write a chart archive's ``files`` (name -> bytes) under ``into``; the chart's directory.

    Every name must be relative, inside one top directory, without ``..``: anything else is refused."""
    tops = {PurePosixPath(name).parts[0] for name in files if PurePosixPath(name).parts}
    if len(tops) != 1:
        raise ChartError(f"a chart archive holds {len(tops)} top directories, not one: it is not a Helm package")
    for name in files:  # every name is checked before anything is written
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or "\\" in name:
            raise ChartError(f"a chart archive names the file {name!r}, outside the chart: it is refused")
    for name, data in files.items():
        target = into.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    chart = into / tops.pop()
    if not (chart / "Chart.yaml").is_file():
        raise ChartError(f"the chart archive has no {chart.name}/Chart.yaml: it is not a Helm package")
    return chart


def pull_chart(api: RegistryAPI, repository: str, version: str, into: Path) -> Path:
    """The chart ``repository:version`` of ``api``'s registry, unpacked under ``into``."""
    found = published_chart_contents(api, repository, version)
    if found is None:
        raise ChartError(f"chart {api.host}/{repository}:{version} is not there any more: re-run the promotion")
    into.mkdir(parents=True, exist_ok=True)
    return unpack_chart(found[1], into)


def repackage_chart(chart_dir: Path, staging: Path, request: PromotionRequest) -> PackagedChart:
    """``chart_dir`` packaged for the destination: values set to it, checked as a release checks its
    charts, and refused when it still renders one of the release's images at the source."""
    names = [image.name for image in request.config.images]
    images = {name: image_ref(request.to_registry, name, request.tag) for name in names}
    package = prepare_chart(chart_dir, staging, registry=request.to_registry, tag=request.tag,
                            version=request.version.version, images=images, policy=request.config.external_images)
    left = left_at_source(package.images, from_registry=request.from_registry, names=names)
    if left:
        raise ChartError(
            f"chart {package.name} packaged for {request.to_registry} still renders {', '.join(left)} from "
            f"{request.from_registry}: build its image references from global.imageRegistry and global.imageTag")
    return package


def chart_repository(request: PromotionRequest, name: str) -> tuple[str, str]:
    """``(host, repository)`` of chart ``name`` at the source."""
    target = Reference.parse(f"{request.chart_from}/{name}")
    return target.host, target.repository
