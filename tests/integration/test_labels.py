"""The labels a build appends to its staged Dockerfile come out of the engine verbatim."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from tasks.builders.docker import build_image
from tasks.run.context import RunContext
from tasks.run.plan import ImageSpec

pytestmark = pytest.mark.integration


def test_labels_with_quotes_and_dollars_reach_the_image_in_one_step(
    engine: docker.APIClient, tmp_path: Path, run_context: RunContext
) -> None:
    """One LABEL step whatever the number of labels, values exactly as given, the checkout untouched."""
    (tmp_path / "VERSION").write_text(uuid.uuid4().hex)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY VERSION /VERSION\n")
    labels = {f"org.example.l{n}": f"value {n}" for n in range(6)} | {"org.example.odd": 'a "quoted" $HOME \\ end'}
    ref = f"fma-labels-test/{uuid.uuid4().hex[:8]}:v1"
    spec = ImageSpec(name="labels", ref=ref, dockerfile=dockerfile, context=tmp_path, labels=labels)
    lines: list[str] = []

    class Log:
        def info(self, message: str, *args: object) -> None:
            lines.append(message % args)

    try:
        built = build_image(engine, spec, run_context, Log())
        assert engine.inspect_image(built.image_id)["Config"]["Labels"] == labels
        assert sum("LABEL" in line for line in lines if "Step" in line) == 1
        assert any("Step 3/3" in line for line in lines)
        assert dockerfile.read_text() == "FROM scratch\nCOPY VERSION /VERSION\n"
    finally:
        engine.remove_image(ref, force=True, noprune=True)
