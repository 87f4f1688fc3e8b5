"""The container-start proof's decisions: which containers a chart runs from the release's images, how a
start is judged, and an executable's architecture against its platform."""

from __future__ import annotations

import pytest

from tasks.proof.checks import Proof, ProofCheck
from tasks.proof.containers import (
    ContainerToStart,
    Outcome,
    architecture_mismatch,
    chart_containers,
    elf_architecture,
    judge_start,
    unrun_images,
)

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fma-dpc}
spec:
  template:
    spec:
      initContainers:
        - {name: inspector, image: busybox:1.38.0, command: [sh]}
      containers:
        - name: controller
          image: stage.example/fma/dual-pods-controller:v0.6.4
          command: [/ko-app/dual-pods-controller]
          args: [--zap-log-level=info]
          env:
            - {name: GOCOVERDIR, value: /tmp/cover}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: populate}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - {name: populator, image: "stage.example/fma/launcher-populator:v0.6.4"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-workload}
data: {image: stage.example/fma/dual-pods-controller:v0.6.4}
"""
REFS = {"stage.example/fma/dual-pods-controller:v0.6.4": "dual-pods-controller",
        "stage.example/fma/launcher-populator:v0.6.4": "launcher-populator"}


def test_a_chart_s_containers_of_release_images_with_command_args_and_plain_env() -> None:
    found = chart_containers("fma-controllers", {"t.yaml": DEPLOYMENT, "again.yaml": DEPLOYMENT}, REFS)
    assert [c.image for c in found] == ["dual-pods-controller", "launcher-populator"]  # each once; no busybox
    controller, populator = found
    assert controller.where == "chart fma-controllers, Deployment fma-dpc, container controller"
    assert controller.command == ("/ko-app/dual-pods-controller",) and controller.args == ("--zap-log-level=info",)
    assert controller.env == (("GOCOVERDIR", "/tmp/cover"),)  # a fieldRef is no plain value
    assert populator.command is None and populator.args is None and "CronJob populate" in populator.where


def test_images_no_chart_runs_start_with_their_entrypoint_or_the_smoke_command() -> None:
    ran = [ContainerToStart("dual-pods-controller", "chart x")]
    starts = unrun_images(["dual-pods-controller", "requester", "launcher"], ran, {"launcher": ["python3", "-V"]})
    assert [(s.image, s.command) for s in starts] == [("requester", None), ("launcher", ("python3", "-V"))]


@pytest.mark.parametrize(("outcome", "started", "words"), [
    (Outcome(None, "serving"), True, "running after 5 s"),
    (Outcome(0, "done"), True, "exited 0"),
    (Outcome(1, "error: cannot reach the API server\nmore"), True, "its own error"),
    (Outcome(139, ""), True, "exit 139"),  # a crash of the program: it started
    (Outcome(127, "", 'exec: "/ko-app/x": stat /ko-app/x: no such file or directory'), False, "no such file"),
    (Outcome(127, "sh: /x: not found"), False, "did not start"),
    (Outcome(126, "/app: permission denied"), False, "permission denied"),
    (Outcome(None, "", "exec format error: /ko-app/x is built for linux/amd64, the image is linux/arm64"), False,
     "exec format error"),
    (Outcome(1, "exec /ko-app/x: exec format error"), False, "exec format error"),
])
def test_a_start_is_judged_by_whether_the_executable_ran(outcome: Outcome, started: bool, words: str) -> None:
    passed, detail = judge_start(outcome, 5)
    assert passed is started and words in detail and "\n" not in detail


def elf(machine: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little")


def test_an_executable_built_for_another_architecture_is_named() -> None:
    assert elf_architecture(elf(62)) == "amd64" and elf_architecture(elf(183)) == "arm64"
    assert elf_architecture(b"#!/bin/sh\nexec x\n   ") is None
    assert architecture_mismatch("/ko-app/x", elf(183), "linux/arm64") is None
    assert architecture_mismatch("/bin/sh", b"#!/bin/sh\n" + bytes(10), "linux/arm64") is None
    assert architecture_mismatch("/ko-app/x", elf(62), "linux/arm64") == (
        "exec format error: /ko-app/x is built for linux/amd64, the image is linux/arm64")


def test_a_proof_passes_only_with_checks_and_none_failed() -> None:
    assert not Proof.of([]).passed and "checked nothing" in Proof.of([]).failure_line()
    good, bad = ProofCheck("lint", True, "no errors", 0.2), ProofCheck("start x linux/arm64", False, "no such | file")
    assert Proof.of([good]).passed and not Proof.of([good, bad]).passed
    assert Proof.of([good, bad]).failure_line() == "start x linux/arm64: no such | file"
    table = Proof.of([good, bad]).table().splitlines()
    assert table[0] == "| check | result | seen | seconds |"
    assert "**failed**" in table[3] and "no such \\| file" in table[3]


def test_an_architecture_mismatch_is_said_once_and_identical_failures_once() -> None:
    """The start's own words are not prefixed again; two renders that start the same container the same way fail
    once in the line."""
    mismatch = "exec format error: /app/cat is built for linux/amd64, the image is linux/arm64"
    passed, detail = judge_start(Outcome(None, "", mismatch), 5)
    assert not passed and detail == mismatch
    same = ProofCheck("start a linux/arm64", False, "no such file: /x")
    proof = Proof.of([same, same, ProofCheck("start b linux/amd64", False, "no such file: /y")])
    assert proof.failure_line() == "start a linux/arm64: no such file: /x; start b linux/amd64: no such file: /y"
