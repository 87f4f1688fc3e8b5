"""Signed releases: the FMA sample released with a generated cosign key (the run's shared release,
tests/integration/shared.py), checked with the real cosign, with ``fma-release verify``, against the
registry and against the Prefect server's stored logs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devkit.fma_sample import BaseImage, FmaBases, make_fma_source
from devkit.registry import RegistryProcess
from tasks.core import tools
from tasks.oci.registry import RegistryAPI
from tasks.run.config import DEFAULT_CONFIG
from tests.integration.shared import PASSWORD, Signed, fma_release, key_pair

pytestmark = pytest.mark.integration

OTHER_PASSWORD = "another-key-pw"


def cosign(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools.tool("cosign"), *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def statements(ref: str, pub: Path, predicate_type: str) -> list[dict[str, Any]]:
    done = cosign("verify-attestation", "--key", str(pub), "--insecure-ignore-tlog=true", "--offline=true",
                  "--type", predicate_type, ref)
    assert done.returncode == 0, f"{ref} {predicate_type}: {done.stderr[-1500:]}"
    return [json.loads(base64.b64decode(json.loads(line)["payload"]))
            for line in done.stdout.splitlines() if line.startswith("{")]


def platform_provenance(signed: Signed, name: str, platform: str) -> dict[str, Any]:
    """The provenance predicate of ``name``'s ``platform`` manifest in a signed release."""
    (image,) = [i for i in signed.summary["images"] if i["name"] == name]
    repo = image["ref"].rsplit(":", 1)[0]
    with RegistryAPI(repo.split("/", 1)[0]) as api:
        found = api.manifest(repo.split("/", 1)[1], image["digest"])
    assert found is not None
    entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
               for m in found[1].get("manifests") or []}
    (statement,) = statements(f"{repo}@{entries.get(platform, image['digest'])}", signed.pub, "slsaprovenance1")
    predicate: dict[str, Any] = statement["predicate"]
    return predicate


def test_cosign_verifies_every_image_manifest_and_the_chart(signed: Signed) -> None:
    """`cosign verify --key` passes for the index and every platform manifest of each image, and for the chart;
    each signature claims exactly its digest."""
    targets = [(repo, digest) for repo, digest, _ in signed.image_digests()] + signed.chart_digests()
    assert len(targets) == 11  # 2 ko indexes of 2 platforms, requester's index of 2, launcher, the chart
    for repo, digest in targets:
        done = cosign("verify", "--key", str(signed.pub), "--insecure-ignore-tlog=true", "--offline=true",
                      "--output", "json", f"{repo}@{digest}")
        assert done.returncode == 0, f"{repo}@{digest}: {done.stderr[-1500:]}"
        (claim,) = json.loads(done.stdout.strip().splitlines()[-1])
        assert claim["critical"]["image"]["docker-manifest-digest"] == digest


def test_provenance_and_sbom_attestations_verify_and_say_what_was_built(signed: Signed) -> None:
    """Each image manifest has a SLSA v1 provenance statement (subject: its digest; the tag, source, config
    digest, tagged commit, base digests, the flow run and times) and an SPDX SBOM, both signed."""
    config_digest = __import__("hashlib").sha256(Path("release.yaml").read_bytes()).hexdigest()
    run_ids = set()
    for repo, digest, is_image in signed.image_digests():
        (statement,) = statements(f"{repo}@{digest}", signed.pub, "slsaprovenance1")
        assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
        assert [s["digest"]["sha256"] for s in statement["subject"]] == [digest.removeprefix("sha256:")]
        definition = statement["predicate"]["buildDefinition"]
        assert "fma-release" in definition["buildType"]
        external = definition["externalParameters"]
        assert (external["tag"], external["source"]) == (signed.src.tag, str(signed.src.path))
        assert external["config"]["digest"]["sha256"] == config_digest
        dependencies = definition["resolvedDependencies"]
        assert dependencies[0]["digest"] == {"gitCommit": signed.src.tag_commit}
        if is_image:  # every platform image names its bases by digest
            bases = [d for d in dependencies[1:] if d["uri"].startswith("pkg:docker/")]
            assert bases and all(len(d["digest"]["sha256"]) == 64 for d in bases)
        details = statement["predicate"]["runDetails"]
        run_ids.add(details["metadata"]["invocationID"])
        assert details["builder"]["id"].endswith(details["metadata"]["invocationID"])
        if is_image:
            (sbom,) = statements(f"{repo}@{digest}", signed.pub, "spdxjson")
            assert sbom["predicate"]["spdxVersion"].startswith("SPDX-")
            assert [s["digest"]["sha256"] for s in sbom["subject"]] == [digest.removeprefix("sha256:")]
    assert len(run_ids) == 1  # one run made them all
    launcher = [s for s in signed.summary["signatures"] if s["artifact"] == "launcher"]
    assert launcher and launcher[0]["sbom"] == "signed"


def test_the_provenance_of_the_coverage_build_names_its_goflags(signed: Signed) -> None:
    """dual-pods-controller's provenance (each platform) records the GOFLAGS it was compiled with, upstream's
    -cover -coverpkg with the list computed at the tag without pkg/generated/, and its cover exclusions; the
    populator's records none; each ko base is named as .ko.yaml writes it."""
    module = "example.invalid/fma-sample"
    for platform in ("linux/amd64", "linux/arm64"):
        covered = platform_provenance(signed, "dual-pods-controller", platform)
        internal = covered["buildDefinition"]["internalParameters"]
        assert internal["cover"] == {"exclude": ["pkg/generated"]}
        flags = internal["goflags"].split()
        assert flags[0] == "-cover" and flags[1].startswith("-coverpkg=") and len(flags) == 2
        packages = set(flags[1].removeprefix("-coverpkg=").split(","))
        assert {f"{module}/cmd/dual-pods-controller", f"{module}/cmd/launcher-populator",
                f"{module}/pkg/buildinfo"} <= packages
        assert [p for p in packages if p.startswith(f"{module}/pkg/generated")] == []
        base = covered["buildDefinition"]["resolvedDependencies"][1]
        assert base["annotations"] == {"writtenAs": base["uri"].removeprefix("pkg:docker/").split("?")[0],
                                       "writtenIn": ".ko.yaml"}  # no mirror: pulled as written
        plain = platform_provenance(signed, "launcher-populator", platform)["buildDefinition"]["internalParameters"]
        assert "goflags" not in plain and "cover" not in plain


def test_fma_release_verify_passes_and_fails_with_another_key(signed: Signed, tmp_path: Path) -> None:
    """`fma-release verify` prints a table and exits 0; with another key it exits 1 naming every artifact."""
    command = signed.summary["verify_command"].split()
    assert command[:3] == ["fma-release", "verify", signed.src.tag]
    args = [a if a != "cosign.pub" else str(signed.pub) for a in command[2:]]
    ok = fma_release("verify", *args, env={})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(" ok ") >= 11 and "verified v0.6.4: 11 artifact(s)" in ok.stdout

    _, other = key_pair(tmp_path / "other", OTHER_PASSWORD)
    args = [a if a != str(signed.pub) else str(other) for a in args]
    bad = fma_release("verify", *args, env={})
    assert bad.returncode == 1
    (line,) = bad.stderr.strip().splitlines()
    assert "11 of 11 artifact(s) failed verification" in line
    for name in ("dual-pods-controller linux/arm64", "launcher-populator", "requester linux/amd64", "launcher (",
                 "chart fma-controllers"):
        assert name in line


def test_an_image_retagged_to_other_content_fails_verify(
    signed_exclusively: Signed, registry: RegistryProcess,
) -> None:
    """The launcher's tag pointed by hand at another (unsigned) image: verify fails naming the launcher only (no
    other test reads the release meanwhile; the tag is put back)."""
    signed = signed_exclusively
    repository = signed.registry.split("/", 1)[1] + "/launcher"
    args = [a if a != "cosign.pub" else str(signed.pub) for a in signed.summary["verify_command"].split()[2:]]
    with RegistryAPI(registry.host) as api:
        original = api.manifest_bytes(repository, signed.src.tag)
        (requester,) = [i for i in signed.summary["images"] if i["name"] == "requester"]
        amd64 = next(p["digest"] for p in requester["platforms"] if p["platform"] == "linux/amd64")
        other = api.manifest_bytes(signed.registry.split("/", 1)[1] + "/requester", amd64)
        assert original is not None and other is not None
        for layer in [*json.loads(other[2]).get("layers", []), json.loads(other[2])["config"]]:
            api.upload_blob(repository, layer["digest"],
                            api.blob(signed.registry.split("/", 1)[1] + "/requester", layer["digest"]))
        api.put_manifest(repository, signed.src.tag, other[2], other[1])
        try:
            bad = fma_release("verify", *args, env={})
        finally:
            api.put_manifest(repository, signed.src.tag, original[2], original[1])
    assert bad.returncode == 1
    (line,) = bad.stderr.strip().splitlines()
    assert "1 of 11 artifact(s) failed verification: launcher (signature: missing" in line


def test_a_tag_swapped_to_another_releases_signed_image_fails_verify(
    signed_exclusively: Signed, registry: RegistryProcess,
) -> None:
    """launcher:v0.6.4 pointed at v0.6.3's launcher, signed and attested by the same key: verify fails
    naming the launcher and both tags (signature and SBOM still check out: only the provenance tells). No other
    test reads the shared release meanwhile (its source gains a tag, its registry a release, its tag is put back)."""
    signed = signed_exclusively
    # Another commit (a release record answers a commit already released, whatever its tag).
    subprocess.run(["git", "commit", "--allow-empty", "-qm", "another release"], cwd=signed.src.path, check=True,
                   capture_output=True)
    subprocess.run(["git", "tag", "-a", "v0.6.3", "-m", "another release", "HEAD"],
                   cwd=signed.src.path, check=True, capture_output=True)
    older = fma_release("run", "v0.6.3", "--source", str(signed.src.path), "--registry", signed.registry,
                        "--retry-delay", "0.1", env=signed.env)
    assert older.returncode == 0, older.stderr[-3000:]
    repository = signed.registry.split("/", 1)[1] + "/launcher"
    args = [a if a != "cosign.pub" else str(signed.pub) for a in signed.summary["verify_command"].split()[2:]]
    with RegistryAPI(registry.host) as api:
        original = api.manifest_bytes(repository, signed.src.tag)
        swapped = api.manifest_bytes(repository, "v0.6.3")
        assert original is not None and swapped is not None and swapped[0] != original[0]
        api.put_manifest(repository, signed.src.tag, swapped[2], swapped[1])
        try:
            bad = fma_release("verify", *args, env={})
        finally:
            api.put_manifest(repository, signed.src.tag, original[2], original[1])
    assert bad.returncode == 1
    (line,) = bad.stderr.strip().splitlines()
    assert "1 of 11 artifact(s) failed verification: launcher (provenance: its provenance is of v0.6.3, " \
           "not v0.6.4: the tag points at another release's image)" in line
    assert "launcher   " in bad.stdout


def test_neither_the_password_nor_the_key_is_in_the_runs_prefect_logs(signed: Signed) -> None:
    """The flow run's logs, read back from the Prefect API, hold neither the key's password nor its PEM text;
    nor does the console output or the summary."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    (statement,) = statements(f"{signed.image_digests()[0][0]}@{signed.image_digests()[0][1]}", signed.pub,
                              "slsaprovenance1")
    run_id = statement["predicate"]["runDetails"]["metadata"]["invocationID"]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        assert client.read_flow_run(run_id).name == f"release {signed.src.tag}"
    assert len(logs) > 10
    text = "\n".join(log.message for log in logs)
    pem_lines = [line for line in signed.key.read_text().splitlines() if line and not line.startswith("-----")]
    assert "signed and attested" in text or "newly signed" in text
    for secret in (PASSWORD, *pem_lines):
        assert secret not in text
        assert secret not in signed.run.stdout + signed.run.stderr
        assert secret not in json.dumps(signed.summary)


def _signature_tags(api: RegistryAPI, signed: Signed) -> dict[str, str]:
    """The .sig and .att tags of this release's own manifests (the repositories may hold another release's)."""
    ours = [(repo, digest) for repo, digest, _ in signed.image_digests()] + signed.chart_digests()
    repos = {repo.split("/", 1)[1] for repo, _ in ours}
    prefixes = tuple(digest.replace(":", "-") + "." for _, digest in ours)
    found = {}
    for repo in sorted(repos):
        for tag in api.tags(repo):
            if tag.endswith((".sig", ".att")) and tag.startswith(prefixes):
                found[f"{repo}:{tag}"] = api.digest(repo, tag)
    return found


def test_a_rerelease_pushes_no_new_signature(signed: Signed, registry: RegistryProcess, tmp_path: Path) -> None:
    """The same tag released again with no local record: nothing built or pushed, every signature and
    attestation found and verified, none pushed again (the .sig and .att manifests are unchanged)."""
    with RegistryAPI(registry.host) as api:
        before = _signature_tags(api, signed)
    assert len([t for t in before if t.endswith(".sig")]) == 11
    assert len([t for t in before if t.endswith(".att")]) == 10  # every image manifest; the chart is signed only
    out, tmp = tmp_path / "again.json", tmp_path / "tmp"
    tmp.mkdir()
    again = fma_release("run", signed.src.tag, "--source", str(signed.src.path), "--registry", signed.registry,
                        "--summary-json", str(out),
                        env={**signed.env, "FMA_STATE_DIR": str(tmp_path / "state"), "TMPDIR": str(tmp)})
    assert again.returncode == 0, again.stderr[-2000:]
    # The key's public half is noted for the next run; the run's copy of the key is gone.
    assert _noted(tmp_path / "state", signed.key).read_text() == signed.pub.read_text()
    assert not list(tmp.glob("fma-run-key-*"))
    summary = json.loads(out.read_text())
    assert {i["status"] for i in summary["images"]} == {"already published"}
    assert summary["signatures"] and all(
        s["signature"] == "already signed" and s["provenance"] in ("already signed", None)
        and s["sbom"] in ("already signed", None) for s in summary["signatures"])
    with RegistryAPI(registry.host) as api:
        assert _signature_tags(api, signed) == before


def test_a_wrong_password_fails_in_one_line_before_anything_is_published(
    signed: Signed, registry: RegistryProcess, tmp_path: Path,
) -> None:
    reg = f"{registry.host}/badpw/fma"
    done = fma_release("run", signed.src.tag, "--source", str(signed.src.path), "--registry", reg,
                       env={**signed.env, "FMA_SIGNING_PASSWORD": "not-the-password",
                            "FMA_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("fma-release:")]
    assert "wrong password" in line and "FMA_SIGNING_PASSWORD" in line
    assert "not-the-password" not in done.stdout + done.stderr
    with RegistryAPI(registry.host) as api:
        assert all(api.tags(f"badpw/fma/{name}") == [] for name in
                   ("launcher", "requester", "dual-pods-controller", "launcher-populator", "charts/fma-controllers"))


def _noted(state: Path, key: Path) -> Path:
    """Where a run notes the public half of ``key`` in the state directory ``state``."""
    return state / "signing-keys" / f"{hashlib.sha256(key.read_bytes()).hexdigest()}.pub"


@pytest.mark.parametrize("fault", ["wrong password", "wrong note"])
def test_a_key_noted_before_still_fails_before_any_build_when_it_does_not_open_as_noted(
    signed: Signed, registry: RegistryProcess, tmp_path: Path, fault: str,
) -> None:
    """A key this machine has opened before is opened while the source is checked out: a wrong password, or a
    public half that is not the key's own (a note changed), still fails the run in one line before any build,
    with nothing published; a wrong note is removed; the run's copy of the key is gone when the run ends."""
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    note = _noted(state, signed.key)
    note.parent.mkdir(parents=True)
    if fault == "wrong password":
        note.write_text(signed.pub.read_text())
        env = {"FMA_SIGNING_PASSWORD": "not-the-password"}
    else:
        _, other = key_pair(tmp_path / "other", OTHER_PASSWORD)
        note.write_text(other.read_text())
        env = {}
    reg = f"{registry.host}/noted{fault[6:]}/fma"
    done = fma_release("run", signed.src.tag, "--source", str(signed.src.path), "--registry", reg,
                       env={**signed.env, **env, "FMA_STATE_DIR": str(state), "TMPDIR": str(tmp)})
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("fma-release:")]
    output = done.stdout + done.stderr
    if fault == "wrong password":
        assert "wrong password" in line and "FMA_SIGNING_PASSWORD" in line
        assert note.read_text() == signed.pub.read_text()
    else:
        assert "is not the key's own" in line and str(note) in line and not note.exists()
    assert "not-the-password" not in output
    assert " building" not in output and "Task run 'build " not in output
    assert not list(tmp.glob("fma-run-key-*"))
    with RegistryAPI(registry.host) as api:
        assert all(api.tags(f"{reg.split('/', 1)[1]}/{name}") == [] for name in
                   ("launcher", "requester", "dual-pods-controller", "launcher-populator", "charts/fma-controllers"))


def test_the_github_release_lists_every_digest_and_the_verify_command(signed: Signed, tmp_path: Path) -> None:
    """github-release --summary-json: the body gains an Artifacts section with every image, platform and chart
    digest, the helm install command and the verify command; a summary of another tag is refused."""
    from devkit.github_stub import GitHubStub

    repo = "llm-d-incubation/llm-d-fast-model-actuation"
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(signed.summary))
    with GitHubStub(token="ghp-stub-token-xyz") as stub:
        stub.add_release(repo, "v0.6.3")
        env = {"GITHUB_TOKEN": "ghp-stub-token-xyz"}
        done = fma_release("github-release", signed.src.tag, "--repo", repo, "--api-url", stub.url,
                           "--summary-json", str(summary), env=env)
        assert done.returncode == 0, done.stderr
        (create,) = stub.posted(f"/repos/{repo}/releases")
        wrong = fma_release("github-release", "v0.6.5", "--repo", repo, "--api-url", stub.url,
                            "--summary-json", str(summary), env=env)
    assert create.body is not None
    body = str(create.body["body"])
    assert "## Artifacts" in body
    digests = [d for _, d, _ in signed.image_digests()] + [d for _, d in signed.chart_digests()]
    assert all(d in body for d in digests)
    assert signed.summary["verify_command"] in body and "helm install fma oci://" in body
    assert wrong.returncode == 2 and "not v0.6.5" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_the_key_from_a_prefect_secret_block_is_the_same_key(signed: Signed, tmp_path: Path) -> None:
    """FMA_SIGNING_KEY_BLOCK: the key's PEM from a Secret block signs as the file does (what the file signed
    verifies as already signed); the PEM text reaches neither the console nor the summary."""
    from prefect.blocks.system import Secret

    name = f"fma-signing-key-{tmp_path.name[-12:].lower().replace('_', '-')}"
    Secret(value=signed.key.read_text()).save(name, overwrite=True)
    out = tmp_path / "block.json"
    env = {"FMA_SIGNING_KEY": "", "FMA_SIGNING_KEY_BLOCK": name, "FMA_SIGNING_PASSWORD": PASSWORD,
           "FMA_STATE_DIR": str(tmp_path / "state")}
    done = fma_release("run", signed.src.tag, "--source", str(signed.src.path), "--registry", signed.registry,
                       "--summary-json", str(out), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["public_key"] == signed.summary["public_key"]
    assert {s["signature"] for s in summary["signatures"]} == {"already signed"}
    pem_lines = [line for line in signed.key.read_text().splitlines() if line and not line.startswith("-----")]
    assert not any(line in done.stdout + done.stderr + out.read_text() for line in pem_lines)


def test_no_sign_releases_unsigned_and_a_late_signing_names_the_run_that_built_each_image(
    signed: Signed, fma_bases: FmaBases, registry: RegistryProcess, tmp_path: Path,
) -> None:
    """A release made with --no-sign while a key is configured is published unsigned and says so (its summary, one
    line on the console, no .sig or .att anywhere). Its bases are written in the source as an unreachable registry
    and pulled through mirrors:. Signed by a re-run with the key, the re-run says in its notes what it signed; every
    provenance names the run that built the image as builder and invocation (not the signing run), with that
    build's start and finish, each base as the source writes it (file and line) with the mirror pulled, and the
    coverage build's GOFLAGS."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    mirror = fma_bases.static.ref.split("/chainguard/", 1)[0]  # <registry>/fma-bases
    upstream = "upstream.invalid"

    def written(base: BaseImage) -> BaseImage:
        return replace(base, ref=base.ref.replace(mirror, upstream, 1))

    bases = replace(fma_bases, static=written(fma_bases.static), builder=written(fma_bases.builder),
                    runtime=written(fma_bases.runtime), launcher=written(fma_bases.launcher))
    src = make_fma_source(tmp_path / "late", bases=bases)
    config = tmp_path / "release.yaml"
    config.write_text(DEFAULT_CONFIG.read_text() + f"mirrors:\n  {upstream}: {mirror}\n")
    reg = f"{registry.host}/late/fma"
    env = {**signed.env, "FMA_STATE_DIR": str(tmp_path / "state")}
    args = ["run", src.tag, "--source", str(src.path), "--registry", reg, "--config", str(config),
            "--retry-delay", "0.1"]
    unsigned = tmp_path / "unsigned.json"
    first = fma_release(*args, "--no-sign", "--summary-json", str(unsigned), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    made = json.loads(unsigned.read_text())
    assert made["signed"] is False and made["signatures"] == [] and made["verify_command"] == ""
    assert "unsigned: --no-sign" in made["notes"]
    assert len([line for line in (first.stdout + first.stderr).splitlines() if "unsigned: --no-sign" in line]) >= 1
    with RegistryAPI(registry.host) as api:
        for name in ("launcher", "requester", "dual-pods-controller", "launcher-populator", "charts/fma-controllers"):
            tags = api.tags(f"late/fma/{name}")
            assert tags and not [t for t in tags if t.endswith((".sig", ".att"))], (name, tags)
    out = tmp_path / "late.json"
    late = fma_release(*args, "--summary-json", str(out), env=env)
    assert late.returncode == 0, late.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert {i["status"] for i in summary["images"]} == {"already published"}
    assert "signed or attested 11 of its manifest(s)" in " ".join(summary["notes"])
    assert not any("nothing changed" in note for note in summary["notes"])

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"release {src.tag}"])))
    ours = {(r.parameters or {}).get("sign", True): r for r in runs
            if (r.parameters or {}).get("source") == str(src.path)}
    built_by, signer = str(ours[False].id), str(ours[True].id)
    assert built_by != signer

    late_signed = replace(signed, summary=summary)
    checked = 0
    for image in summary["images"]:
        repo = image["ref"].rsplit(":", 1)[0]
        with RegistryAPI(registry.host) as api:
            found = api.manifest(repo.split("/", 1)[1], image["digest"])
        assert found is not None
        platforms = [m["digest"] for m in found[1].get("manifests") or []]
        for digest in (image["digest"], *platforms):
            (statement,) = statements(f"{repo}@{digest}", signed.pub, "slsaprovenance1")
            details = statement["predicate"]["runDetails"]
            assert details["metadata"]["invocationID"] == built_by, f"{repo}@{digest}"
            assert details["builder"]["id"].endswith(built_by)
            if digest in platforms or not platforms:  # a platform's own build: its start and finish
                assert details["metadata"]["startedOn"] <= details["metadata"]["finishedOn"]
            checked += 1
    assert checked == 10
    requester = platform_provenance(late_signed, "requester", "linux/arm64")
    deps = {d["annotations"]["writtenAs"]: d for d in requester["buildDefinition"]["resolvedDependencies"][1:]}
    assert set(deps) == {bases.builder.ref, bases.runtime.ref}
    runtime = deps[bases.runtime.ref]
    assert runtime["annotations"]["mirror"] == fma_bases.runtime.ref
    assert runtime["annotations"]["writtenIn"].startswith("dockerfiles/Dockerfile.requester:")
    assert runtime["name"] == fma_bases.runtime.ref.rsplit(":", 1)[0] and len(runtime["digest"]["sha256"]) == 64
    line = int(runtime["annotations"]["writtenIn"].rsplit(":", 1)[1])
    dockerfile = (src.path / "dockerfiles/Dockerfile.requester").read_text().splitlines()
    assert dockerfile[line - 1] == f"FROM {bases.runtime.ref}"
    controller = platform_provenance(late_signed, "dual-pods-controller", "linux/arm64")["buildDefinition"]
    assert controller["internalParameters"]["goflags"].startswith("-cover -coverpkg=")
    (ko_base,) = controller["resolvedDependencies"][1:]
    assert ko_base["annotations"] == {"writtenAs": bases.static.pinned, "writtenIn": ".ko.yaml",
                                      "mirror": fma_bases.static.pinned}
