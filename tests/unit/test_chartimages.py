"""The release's own images in a rendered chart versus external ones, and the external_images policy."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pytest

from tasks.core.errors import ChartError, ConfigError, ReleaseError
from tasks.helm.images import POLICIES, ChartImageCheck, ExternalImage, check_chart_images, image_switches
from tasks.oci.references import Reference


def R(host: str, repository: str, tag: str = "", digest: str = "") -> tuple[str, ...]:
    return (host, repository, tag, digest)

REG = "127.0.0.1:5000/t1/fma"
TAG = "v0.6.4"
NAMES = ("dual-pods-controller", "launcher-populator", "launcher", "requester")
IMAGES = {name: f"{REG}/{name}:{TAG}" for name in NAMES}
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
DIGESTS = {"dual-pods-controller": {D1, D2}}  # the tag's index and a platform's manifest
CHART = "fma-controllers"


def check(*rendered: str, policy: str = "allow", registry: str = REG, images: Mapping[str, str] = IMAGES,
          digests: Mapping[str, Collection[str]] = DIGESTS) -> ChartImageCheck:
    return check_chart_images(CHART, rendered, registry=registry, images=images, digests=digests, policy=policy)


# -- reading references as Kubernetes and docker do ---------------------------------------------------


@pytest.mark.parametrize(("reference", "expected"), [
    ("busybox:1.38.0", R("registry-1.docker.io", "library/busybox", "1.38.0")),
    ("busybox", R("registry-1.docker.io", "library/busybox")),
    ("docker.io/busybox", R("registry-1.docker.io", "library/busybox")),
    ("index.docker.io/library/busybox:1", R("registry-1.docker.io", "library/busybox", "1")),
    ("myorg/tool:2", R("registry-1.docker.io", "myorg/tool", "2")),
    ("ghcr.io/llm-d-incubation/fma/requester:v1", R("ghcr.io", "llm-d-incubation/fma/requester", "v1")),
    ("127.0.0.1:5000/t1/fma/launcher:v0.6.4", R("127.0.0.1:5000", "t1/fma/launcher", "v0.6.4")),
    ("localhost/x", R("localhost", "x")),
    ("localhost:5000/x@" + D1, R("localhost:5000", "x", "", D1)),
    ("Registry.Example.COM/a/b:T", R("registry.example.com", "a/b", "T")),
    ("MyRegistry/x:1", R("myregistry", "x", "1")),  # upper case cannot be a path: it is a host
    ("[::1]:5000/x:y", R("[::1]:5000", "x", "y")),
    ("quay.io/org/img:1.2@" + D2, R("quay.io", "org/img", "1.2", D2)),
    ("a.b/c__d/e-f.g_h:1", R("a.b", "c__d/e-f.g_h", "1")),
])
def test_references_are_normalised_like_docker(reference: str, expected: tuple[str, ...]) -> None:
    """Docker Hub's implicit domain and library/, hosts with ports, tags and digests: read as docker reads them."""
    ref = Reference.docker(reference)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(("reference", "pulled"), [("busybox", "latest"), ("busybox:1", "1"), ("busybox@" + D1, ""),
                                                   ("busybox:1@" + D1, "1")])
def test_no_tag_and_no_digest_means_latest(reference: str, pulled: str) -> None:
    """Without tag and digest the pulled tag is latest; with a digest alone there is none."""
    assert Reference.docker(reference).pulled_tag == pulled


@pytest.mark.parametrize("reference", [
    "", "Busybox", "busy box", "x:", ":tag", "x@", "x@sha256:123", "x@sha256:" + "A" * 64, "x:-bad", "a//b",
    "reg.io/", "reg.io/a/-b", "x:" + "t" * 129, "-bad.io/x", "a/b:c:d",
])
def test_malformed_references_are_rejected(reference: str) -> None:
    """Upper case, spaces, empty parts, a bad tag, digest or host are not references."""
    with pytest.raises(ValueError, match="malformed"):
        Reference.docker(reference)


# -- the release's own images ---------------------------------------------------------------------------


@pytest.mark.parametrize("rendered", [
    f"{REG}/dual-pods-controller:{TAG}",
    f"{REG}/dual-pods-controller@{D1}",
    f"{REG}/dual-pods-controller@{D2}",
    f"{REG}/dual-pods-controller:{TAG}@{D1}",
    f"{REG}/launcher:{TAG}",
])
def test_own_image_that_this_release_publishes_is_own(rendered: str) -> None:
    """The published tag, or a digest this release pushed (alone or after the right tag), is the release's own."""
    result = check(rendered)
    assert result.own == (rendered,)
    assert result.external == ()
    assert result.warnings == ()


DPC = "dual-pods-controller"


@pytest.mark.parametrize(("rendered", "name"), [
    (f"{REG}/{DPC}:latest", DPC),  # a stale :latest
    (f"{REG}/{DPC}", DPC),  # no tag is :latest
    (f"{REG}/{DPC}:v0.6.3", DPC),  # another release's tag
    (f"{REG}/{DPC}:v0.6.4-linux-arm64", DPC),  # a per-platform tag, not the release's reference
    (f"{REG}/{DPC}@{D3}", DPC),  # a digest this release did not push
    (f"{REG}/launcher@{D1}", "launcher"),  # another image's digest
    (f"{REG}/{DPC}:latest@{D1}", DPC),  # the right digest behind a wrong tag
    (f"{REG}/{DPC}:{TAG}@{D3}", DPC),  # the right tag with a wrong digest
])
def test_own_image_not_published_by_this_release_is_refused(rendered: str, name: str) -> None:
    """An own image's reference that this release does not publish is refused, on one line that names it,
    what is published instead and the fix."""
    with pytest.raises(ChartError) as caught:
        check(rendered, f"{REG}/launcher-populator:{TAG}")
    message = str(caught.value)
    assert isinstance(caught.value, ReleaseError)
    assert "\n" not in message
    assert rendered in message
    assert f"this release publishes {IMAGES[name]}" in message
    assert "global.imageRegistry and global.imageTag" in message
    assert message.startswith(f"chart {CHART} ")


def test_every_wrong_own_image_is_named_in_the_one_line() -> None:
    """Two wrong own images: both named in one message."""
    with pytest.raises(ChartError) as caught:
        check(f"{REG}/dual-pods-controller:latest", f"{REG}/launcher-populator:typo")
    assert f"{REG}/dual-pods-controller:latest" in str(caught.value)
    assert f"{REG}/launcher-populator:typo" in str(caught.value)


@pytest.mark.parametrize("rendered", [
    f"127.0.0.1:5001/t1/fma/dual-pods-controller:{TAG}",  # another registry
    "127.0.0.1:5000/t2/fma/dual-pods-controller:latest",  # another path on the same registry
    f"ghcr.io/llm-d-incubation/llm-d-fast-model-actuation/dual-pods-controller:{TAG}",  # upstream's
    f"{REG}/sidecar:latest",  # under the registry path, not one of the release's images
    f"{REG}/dual-pods-controller/extra:latest",  # a deeper path is another repository
    f"{REG}-mirror/dual-pods-controller:latest",  # a prefix of the path is not the path
    f"{REG}/charts/fma-controllers:0.6.4",
])
def test_images_outside_the_releases_own_repositories_are_external(rendered: str) -> None:
    """Only <registry>/<name> of one of the release's images is own; anything else is external, never refused."""
    result = check(rendered)
    assert result.own == ()
    assert result.external == (ExternalImage(chart=CHART, image=rendered, pinned=False),)


@pytest.mark.parametrize(("registry", "rendered"), [
    ("docker.io/myorg", f"myorg/requester:{TAG}"),
    ("myorg", f"docker.io/myorg/requester:{TAG}"),
    ("index.docker.io/myorg", f"myorg/requester:{TAG}"),
    ("GHCR.io/org/", f"ghcr.io/org/requester:{TAG}"),
])
def test_registry_path_and_image_compare_normalised(registry: str, rendered: str) -> None:
    """Docker Hub's spellings and a host's case are one registry path: the image is the release's own."""
    images = {"requester": f"{registry.rstrip('/')}/requester:{TAG}"}
    assert check(rendered, registry=registry, images=images, digests={}).own == (rendered,)


def test_own_and_external_are_sorted_and_deduplicated() -> None:
    """Each image appears once, own and external each in sorted order."""
    rendered = [f"{REG}/requester:{TAG}", "busybox:1.38.0", f"{REG}/dual-pods-controller:{TAG}", "busybox:1.38.0",
                "alpine@" + D3]
    result = check(*rendered)
    assert result.own == (f"{REG}/dual-pods-controller:{TAG}", f"{REG}/requester:{TAG}")
    assert [e.image for e in result.external] == ["alpine@" + D3, "busybox:1.38.0"]


def test_invalid_rendered_reference_is_a_chart_error() -> None:
    """A reference that is not one (a template left a space) refuses the chart, naming it and the fix."""
    with pytest.raises(ChartError, match=r"chart fma-controllers renders an invalid image reference.*'a b:1'.*fix"):
        check("a b:1")


def test_invalid_registry_is_a_config_error() -> None:
    """A registry that makes no valid reference with the images' names is the config's fault."""
    with pytest.raises(ConfigError, match="fix the registry"):
        check(registry="Bad Registry", images={"requester": "x"})


# -- external images and the policy ---------------------------------------------------------------------


@pytest.mark.parametrize(("image", "pinned"), [
    ("busybox:1.38.0", False),
    ("busybox", False),
    ("quay.io/org/tool:1", False),
    ("busybox@" + D3, True),
    ("busybox:1.38.0@" + D3, True),
    ("registry.k8s.io/pause:3.9@" + D3, True),
])
def test_external_images_are_listed_pinned_when_by_digest(image: str, pinned: bool) -> None:
    """An external image is allowed by default and listed; pinned means referenced by digest; each unpinned
    one gives one warning line naming it and how to pin it."""
    result = check(image, f"{REG}/dual-pods-controller:{TAG}")
    assert result.external == (ExternalImage(chart=CHART, image=image, pinned=pinned),)
    if pinned:
        assert result.warnings == ()
    else:
        (warning,) = result.warnings
        assert image in warning and "pinned by digest" in warning and "\n" not in warning
        assert "require-digest" in warning


def test_one_warning_per_unpinned_external_image() -> None:
    """Two unpinned and one pinned external image: two warnings, in the images' order."""
    result = check("busybox:1.38.0", "alpine:3", "pause@" + D3)
    assert [w.split(" uses ")[1].split(",")[0] for w in result.warnings] == ["alpine:3", "busybox:1.38.0"]


def test_require_digest_refuses_unpinned_external_images() -> None:
    """require-digest: the unpinned external images are named on one line with both fixes."""
    with pytest.raises(ChartError) as caught:
        check("busybox:1.38.0", "alpine:3", "pause@" + D3, policy="require-digest")
    message = str(caught.value)
    assert "busybox:1.38.0" in message and "alpine:3" in message and "pause@" not in message
    assert "pin each by digest" in message and "external_images: allow" in message
    assert "\n" not in message


def test_require_digest_allows_pinned_external_images() -> None:
    """require-digest: external images pinned by digest pass, without warnings."""
    result = check("busybox:1.38.0@" + D3, f"{REG}/launcher:{TAG}", policy="require-digest")
    assert result.external == (ExternalImage(CHART, "busybox:1.38.0@" + D3, pinned=True),)
    assert result.warnings == ()


@pytest.mark.parametrize("image", ["busybox:1.38.0", "busybox@" + D3])
def test_deny_refuses_any_external_image(image: str) -> None:
    """deny: an external image is refused, pinned or not, naming it and the fix."""
    with pytest.raises(ChartError) as caught:
        check(image, f"{REG}/launcher:{TAG}", policy="deny")
    assert image in str(caught.value)
    assert "external_images: allow" in str(caught.value)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_passes_a_chart_of_own_images_only(policy: str) -> None:
    """With nothing external, each policy passes."""
    assert check(f"{REG}/launcher:{TAG}", policy=policy).own == (f"{REG}/launcher:{TAG}",)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_wrong_own_image_is_refused_under_every_policy(policy: str) -> None:
    """The own-image rule holds whatever the external policy."""
    with pytest.raises(ChartError, match="does not publish"):
        check(f"{REG}/launcher:latest", policy=policy)


@pytest.mark.parametrize("policy", ["Allow", "require_digest", "", "warn"])
def test_unknown_policy_is_a_config_error(policy: str) -> None:
    """An unknown external_images value is refused, naming the valid ones."""
    with pytest.raises(ConfigError, match="allow, require-digest, deny"):
        check(policy=policy)


def test_digests_default_to_none_and_the_tag_still_matches() -> None:
    """Without digests the published tag is own and any digest form is refused."""
    result = check_chart_images(CHART, [f"{REG}/requester:{TAG}"], registry=REG, images=IMAGES)
    assert result.own == (f"{REG}/requester:{TAG}",)
    with pytest.raises(ChartError):
        check_chart_images(CHART, [f"{REG}/requester@{D1}"], registry=REG, images=IMAGES)


# -- images a values switch brings in --------------------------------------------------------------------

PROXY = "quay.io/brancz/kube-rbac-proxy:v0.18.1"
SECURE = "dualPodsController.secureMetrics=true"
COVER = "global.produceCoverdata=true"


def switched_check(*rendered: str, switched: Mapping[str, list[str]], policy: str = "allow") -> ChartImageCheck:
    return check_chart_images(CHART, rendered, registry=REG, images=IMAGES, digests=DIGESTS, policy=policy,
                              switched=switched)


def test_an_image_only_a_switch_renders_is_listed_with_that_switch() -> None:
    """The defaults render busybox; a switch adds the proxy: both listed, the proxy with its switch, busybox (in
    the defaults and under the switch too) with none."""
    result = switched_check(f"{REG}/{DPC}:{TAG}", "busybox:1.38.0",
                            switched={SECURE: [f"{REG}/{DPC}:{TAG}", "busybox:1.38.0", PROXY],
                                      "global.local=true": [f"{REG}/{DPC}:{TAG}", "busybox:1.38.0"]})
    assert result.external == (ExternalImage(CHART, "busybox:1.38.0", pinned=False),
                               ExternalImage(CHART, PROXY, pinned=False, switches=(SECURE,)))
    assert result.own == (f"{REG}/{DPC}:{TAG}",)
    proxy_warning = [w for w in result.warnings if PROXY in w]
    assert proxy_warning == [f"chart {CHART} uses {PROXY} (with {SECURE}), not pinned by digest: an install gets "
                             f"whatever that tag points at then; pin it as {PROXY}@sha256:..., or set "
                             "external_images: require-digest to refuse it"]


def test_every_switch_that_brings_an_image_in_is_named_in_order() -> None:
    """Two switches each bring busybox in (and the defaults do not): both named, in the switches' order."""
    result = switched_check(f"{REG}/{DPC}:{TAG}", switched={COVER: ["busybox:1.38.0"], SECURE: ["busybox:1.38.0"]})
    assert result.external == (ExternalImage(CHART, "busybox:1.38.0", pinned=False, switches=(COVER, SECURE)),)
    assert result.external[0].named == f"busybox:1.38.0 (with {COVER} or {SECURE})"


@pytest.mark.parametrize("policy", ["deny", "require-digest"])
def test_deny_and_require_digest_refuse_a_switched_image_naming_its_switch(policy: str) -> None:
    """A switched image is held to the policy as a default one is; the one line names the image and its switch."""
    with pytest.raises(ChartError) as caught:
        switched_check(f"{REG}/{DPC}:{TAG}", switched={SECURE: [f"{REG}/{DPC}:{TAG}", PROXY]}, policy=policy)
    message = str(caught.value)
    assert f"{PROXY} (with {SECURE})" in message and "\n" not in message


def test_deny_lets_a_chart_whose_switches_render_only_own_images_through() -> None:
    """deny: switches that only drop or keep the release's own images pass."""
    result = switched_check(f"{REG}/{DPC}:{TAG}", f"{REG}/launcher:{TAG}", policy="deny",
                            switched={"dualPodsController.enabled=false": [f"{REG}/launcher:{TAG}"]})
    assert result.external == () and result.own == (f"{REG}/{DPC}:{TAG}", f"{REG}/launcher:{TAG}")


def test_a_wrong_own_image_under_a_switch_is_refused_naming_the_switch() -> None:
    """An own image's stale tag that only a switch renders is refused as a default one is, with its switch."""
    with pytest.raises(ChartError) as caught:
        switched_check(f"{REG}/{DPC}:{TAG}", switched={"global.local=true": [f"{REG}/{DPC}:latest"]})
    assert f"{REG}/{DPC}:latest (with global.local=true; this release publishes {IMAGES[DPC]})" in str(caught.value)


def test_image_switches_keep_the_defaults_first() -> None:
    """An image the defaults render has no switch, whatever switch renders it too."""
    assert image_switches(["a:1"], {"x=true": ["a:1", "b:1"], "y=false": ["b:1", "c:1"]}) == {
        "a:1": (), "b:1": ("x=true", "y=false"), "c:1": ("y=false",)}
