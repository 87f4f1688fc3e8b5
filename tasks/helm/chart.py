"""Helm charts: set the release's images in values.yaml, stage, lint, render, check, package; how a
packaged chart stands against the registry; a logged-in Helm registry client.

The chart is edited in a staging copy, never where it lives. values.yaml goes
through a comment-preserving round trip (ruamel.yaml): comments, key order
and quoting stay as written. Packaging, linting, rendering and pushing use
Helm's own Go SDK in-process (``helm_python``); no helm binary is needed.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from tasks.core.errors import ChartError, ConfigError, RegistryError, SourceError
from tasks.core.links import check_links
from tasks.core.redact import redact
from tasks.core.status import Status
from tasks.helm.images import ExternalImage, check_chart_images
from tasks.oci.registry import Registries, RegistryAPI, is_loopback
from tasks.run.config import ReleaseConfig
from tasks.run.result import PublishedChart
from tasks.run.retry import is_transient_push_error
from tasks.run.settings import Settings

# libyaml's safe loader when PyYAML was built with it: the same documents, parsed over ten times faster (a
# release renders each chart once per switch and reads every rendered manifest).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class PackagedChart:
    name: str
    version: str
    archive: Path
    external: tuple[ExternalImage, ...] = ()  # images the chart uses that this release does not build
    warnings: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # every image the chart renders with the release's values

    @property
    def item(self) -> str:
        return f"chart {self.name}"


class Standing(Enum):
    """How a packaged chart stands against the chart registry."""

    ABSENT = "absent"  # its version is not there: push it
    SAME = "same"  # there with the same files: nothing to do
    REPLACE = "replace"  # there with other files, and --force: push over it


@dataclass(frozen=True)
class ExistingChart:
    standing: Standing
    digest: str = ""  # the published digest when SAME


CHART_LAYER_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


# -- pure -----------------------------------------------------------------------


def _round_trip() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap long lines
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def set_image_values(text: str, registry: str, tag: str) -> str:
    """values.yaml text with ``global.imageRegistry`` and ``global.imageTag`` set.

    Everything else (comments, key order, quoting) is kept. Raises
    :class:`ChartError` when the text is not YAML or lacks the ``global`` keys.
    """
    rt = _round_trip()
    try:
        data = rt.load(text)
    except YAMLError as err:
        raise ChartError(f"values.yaml is not valid YAML ({first_line(err)}): fix its syntax") from err
    glob = data.get("global") if isinstance(data, MutableMapping) else None
    if not isinstance(glob, MutableMapping) or "imageRegistry" not in glob or "imageTag" not in glob:
        raise ChartError(
            "values.yaml has no global.imageRegistry / global.imageTag: add both keys under 'global' "
            "and use them in the chart's image references"
        )
    glob["imageRegistry"] = registry
    glob["imageTag"] = tag
    out = io.StringIO()
    rt.dump(data, out)
    return out.getvalue()


def first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__




def install_command(remote: str, name: str, version: str, release: str = "fma") -> str:
    return f"helm install {release} {remote}/{name} --version {version}"


def value_switches(values: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Every boolean of a chart's values, as (path, value), in the order values.yaml writes them (pure):
    the switches a user may flip (``global.produceCoverdata``)."""
    found: list[tuple[tuple[str, ...], bool]] = []
    for key, value in values.items():
        if isinstance(value, bool):
            found.append(((*path, str(key)), value))
        elif isinstance(value, Mapping):
            found += value_switches(value, (*path, str(key)))
    return found


def switch_values(path: tuple[str, ...], value: object) -> dict[str, Any]:
    """The values that set ``path`` to ``value`` (what ``--set a.b=value`` gives Helm) (pure)."""
    values: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        values = {key: values}
    return values


def switch_name(path: tuple[str, ...], value: bool) -> str:
    """``global.produceCoverdata=true``: how the summary and errors name a flipped switch."""
    return f"{'.'.join(path)}={'true' if value else 'false'}"


def rendered_images(manifests: Mapping[str, str]) -> set[str]:
    """Every container image a set of rendered manifests references."""
    found: set[str] = set()
    for text in manifests.values():
        try:
            docs = list(yaml.load_all(text, Loader=SAFE_LOADER))
        except yaml.YAMLError as err:
            raise ChartError(f"the chart renders invalid YAML ({first_line(err)}): fix its templates") from err
        for doc in docs:
            found.update(_images_in(doc))
    return found


def _images_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        yield container["image"]
            else:
                yield from _images_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images_in(item)


def chart_contents(archive: bytes) -> dict[str, bytes]:
    """The files of a chart archive by name: what two packages of one chart are compared on
    (archive bytes differ with packaging times, the files do not)."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    files[member.name] = extracted.read() if extracted else b""
    except (tarfile.TarError, OSError) as err:
        raise ChartError(f"a chart archive cannot be read ({err}): re-package the chart") from err
    return files


# -- helm -----------------------------------------------------------------------


def stage_chart(chart_dir: Path, staging_root: Path) -> Path:
    """Copy the chart into a staging directory of its own and return the copy.

    Links are copied as links, never followed, and the copy is then refused when any link in it
    leads outside the chart, or into /proc or /dev (tasks/core/links.py): what Helm packages is
    the chart's own files only."""
    if not (chart_dir / "Chart.yaml").is_file():
        raise ChartError(f"{chart_dir} has no Chart.yaml: point the release config's chart path at a Helm chart")
    target = staging_root / chart_dir.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(chart_dir, target, symlinks=True)
    try:
        check_links(target, target, f"chart {chart_dir.name}", scope="the chart")
    except SourceError as err:
        shutil.rmtree(target, ignore_errors=True)
        raise ChartError(str(err)) from err
    return target


def prepare_chart(
    chart_dir: Path, staging_root: Path, *, registry: str, tag: str, version: str,
    images: Mapping[str, str], policy: str = "allow",
) -> PackagedChart:
    """Stage, set the image values, lint, check rendered images (``images``: name -> the reference this
    release publishes; ``policy``: what external images may be), package."""
    staged = stage_chart(chart_dir, staging_root)
    values = staged / "values.yaml"
    if not values.is_file():
        raise ChartError(
            f"chart {chart_dir.name} has no values.yaml: add one with global.imageRegistry and global.imageTag"
        )
    values.write_text(set_image_values(values.read_text(encoding="utf-8"), registry, tag), encoding="utf-8")
    try:
        chart = helm.Chart.load(staged)
    except helm.HelmError as err:
        raise ChartError(f"chart {chart_dir.name} cannot be loaded ({first_line(err)}): fix Chart.yaml") from err
    name = chart.name
    try:
        report = helm.lint(staged)
        errors = list(report.get("errors") or [])
        if errors:
            raise ChartError(f"chart {name} fails lint: {first_line(Exception(errors[0]))}; fix the chart")
        manifests = chart.render(name="fma", namespace="default", is_install=True)
    except helm.HelmError as err:
        chart.close()
        raise ChartError(f"chart {name} does not render ({first_line(err)}): fix its templates") from err
    try:
        switched, notes = switch_renders(chart, name)
    finally:
        chart.close()
    rendered = rendered_images(manifests)
    check = check_chart_images(name, rendered, registry=registry, images=images, policy=policy, switched=switched)
    out = staging_root / "packages"
    out.mkdir(parents=True, exist_ok=True)
    try:
        archive = helm.package(staged, destination=out, version=version, app_version=tag)
    except helm.HelmError as err:
        raise ChartError(f"chart {name} cannot be packaged ({first_line(err)}): fix the chart") from err
    return PackagedChart(name=name, version=version, archive=Path(archive), external=check.external,
                         warnings=(*notes, *check.warnings), images=tuple(sorted(rendered.union(*switched.values()))))


def switch_renders(chart: helm.Chart, name: str) -> tuple[dict[str, set[str]], list[str]]:
    """The images ``chart`` renders with each boolean of its values flipped, one at a time (switch ->
    images), and a note for each switch under which it does not render (a switch may need other
    values set with it): the images a user can turn on, beyond those of the defaults."""
    switched: dict[str, set[str]] = {}
    notes: list[str] = []
    for path, value in value_switches(chart.values or {}):
        switch = switch_name(path, not value)
        try:
            manifests = chart.render(switch_values(path, not value), name="fma", namespace="default",
                                     is_install=True)
            switched[switch] = rendered_images(manifests)
        except (helm.HelmError, ChartError) as err:
            notes.append(f"chart {name} does not render with {switch} ({first_line(err)}): the images it would "
                         "use then are not checked")
    return switched, notes


@contextmanager
def helm_registry(
    host: str, workdir: Path, settings: Settings, schemes: Any
) -> Iterator[tuple[helm.RegistryClient, bool]]:
    """A Helm registry client with its own credentials file, logged in when credentials exist."""
    plain_http = schemes(host) == "http"
    creds_file = workdir / "helm-registry.json"
    client = helm.RegistryClient(plain_http=plain_http, credentials_file=creds_file)
    try:
        creds = settings.credentials(host)
        if creds is not None:
            try:
                # Loopback registries go unverified, as dockerd treats them (Helm takes no CA file).
                client.login(host, creds.username, creds.password.get_secret_value(), plain_http=plain_http,
                             insecure=is_loopback(host))
            except helm.HelmError as err:
                raise ChartError(
                    f"registry {host} refused the chart login ({redact(first_line(err))}): check "
                    "FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD"
                ) from err
        yield client, plain_http
    finally:
        client.close()
        creds_file.unlink(missing_ok=True)


def published_chart_contents(api: RegistryAPI, repository: str, version: str) -> tuple[str, dict[str, bytes]] | None:
    """``(digest, files)`` of a chart version in the registry, ``None`` when it is not there."""
    found = api.manifest(repository, version)
    if found is None:
        return None
    digest, manifest = found
    layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == CHART_LAYER_TYPE]
    if not layers:
        raise ChartError(f"{repository}:{version} exists but is not a Helm chart: choose another chart registry")
    return digest, chart_contents(api.blob(repository, layers[0]["digest"]))


def existing_chart(
    package: PackagedChart, remote: str, registries: Registries, *, force: bool = False
) -> ExistingChart:
    """How ``package`` stands against the registry; :class:`ChartError` when its version is there
    with other files, unless ``force``."""
    api, target = registries.for_ref(f"{remote}/{package.name}")
    with api:
        existing = published_chart_contents(api, target.repository, package.version)
    if existing is None:
        return ExistingChart(Standing.ABSENT)
    digest, files = existing
    if files == chart_contents(package.archive.read_bytes()):
        return ExistingChart(Standing.SAME, digest)
    if force:
        return ExistingChart(Standing.REPLACE)
    raise ChartError(
        f"chart {package.name} {package.version} already exists at {remote} with other content: "
        "published charts are not overwritten; release a new tag, or pass --force to replace it"
    )


def publish_chart(package: PackagedChart, remote: str, registries: Registries, *, settings: Settings, workdir: Path,
                  force: bool = False) -> PublishedChart:
    """Push a packaged chart to ``remote``; an existing version is kept when identical and refused when
    not (unless ``force``). A push that failed for a transient reason is a transient :class:`RegistryError`."""
    ref = f"{remote}/{package.name}"
    existing = existing_chart(package, remote, registries, force=force)
    if existing.standing is Standing.SAME:
        return PublishedChart(name=package.name, ref=ref, version=package.version, digest=existing.digest,
                              status=Status.ALREADY_PUBLISHED)
    status = Status.REPLACED if existing.standing is Standing.REPLACE else Status.PUSHED
    api, target = registries.for_ref(ref)
    with helm_registry(target.host, workdir, settings, registries.schemes) as (client, plain_http):
        try:
            client.push(package.archive, remote, plain_http=plain_http)
        except helm.HelmError as err:
            reason = redact(first_line(err))
            raise RegistryError(
                f"push of chart {package.name} to {remote} failed ({reason}): "
                "check the registry and credentials, then re-run",
                transient=is_transient_push_error(reason),
            ) from err
    with api:
        found = api.manifest(target.repository, package.version)
    if found is None:
        raise RegistryError(f"chart {package.name} {package.version} is not in {remote} after the push; re-run")
    return PublishedChart(name=package.name, ref=ref, version=package.version, digest=found[0], status=status)


def chart_dirs(config: ReleaseConfig, origin: str, base: Path, tag: str) -> tuple[list[Path], list[str]]:
    """Where each configured chart of ``origin`` ("source": ``base`` is the checkout, "project":
    this repository) lives, and a note for each pattern (``charts/*``, as upstream packages
    ``charts/*/``) that matches no chart; :class:`ConfigError` when a named chart is missing."""
    dirs: list[Path] = []
    notes: list[str] = []
    where = f"the source at {tag}" if origin == "source" else "this project"
    for chart in config.charts:
        if chart.origin != origin:
            continue
        if any(c in chart.path for c in "*?["):
            found = sorted({p.parent.resolve() for p in base.glob(f"{chart.path}/Chart.yaml")})
            dirs += [d for d in found if d.is_relative_to(base.resolve()) and d not in dirs]
            if not found:
                notes.append(f"no chart matches {chart.path} in {where}: this release has images only")
            continue
        path = (base / chart.path).resolve()
        if not path.is_relative_to(base.resolve()):
            raise ConfigError(f"chart path {chart.path} leaves its tree; use a path inside it")
        if not (path / "Chart.yaml").is_file():
            where = f"the source at {tag}" if chart.origin == "source" else "this project"
            raise ConfigError(
                f"chart {chart.path} has no Chart.yaml in {where}: fix 'path' or 'from' in the release config"
            )
        dirs.append(path)
    return dirs, notes


def dry_run_chart(package: PackagedChart, remote: str) -> PublishedChart:
    """A dry run's chart: nothing is pushed; the archive's digest stands where the registry's would."""
    return PublishedChart(name=package.name, ref=f"{remote}/{package.name}", version=package.version,
                          digest=helm.digest(package.archive), status=Status.DRY_RUN)
