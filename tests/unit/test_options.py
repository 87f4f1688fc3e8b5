"""The release's options, defined once: the flow's signature, the CLI, and what a deployment's run may change."""

from __future__ import annotations

import argparse
import inspect

import pytest

from flows.cli import _parser
from tasks.core.errors import ConfigError
from tasks.run.context import ReleaseRequest
from tasks.run.options import (
    FORM_FIELDS,
    OPTIONS,
    add_cli_arguments,
    as_markdown,
    cli_parameters,
    flow_docstring,
    form_fields,
    pinned_changes,
    with_options,
)

DEPLOYED = {"source": "https://example.invalid/fma.git", "registry": "ghcr.io/org/fma", "dry_run": False}


def test_the_flow_takes_every_option_by_keyword_only() -> None:
    """The release flow's parameters are the options, in order, keyword-only, with the options' defaults."""
    from flows.release import release_flow

    parameters = inspect.signature(release_flow.fn).parameters
    assert list(parameters) == [option.name for option in OPTIONS]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["tag"].default is inspect.Parameter.empty
    assert parameters["push_attempts"].default == 5
    with pytest.raises(TypeError):
        release_flow.fn("v0.3.1", "src")  # positional arguments are refused


def test_the_form_describes_each_option_as_written() -> None:
    """Prefect's run form renders each description as Markdown: the flow's schema holds each option's help with
    what Markdown would take for HTML or emphasis escaped, so `<registry>` shows as written (the browser's view:
    tests/integration/test_triggers.py)."""
    from flows.release import release_flow

    properties = release_flow.parameters.model_dump()["properties"]
    for option in OPTIONS:
        assert properties[option.name]["description"] == as_markdown(option.help)
    assert properties["chart_registry"]["description"] == r"OCI URL for charts (default: oci://\<registry\>/charts)"
    assert "<" not in properties["workdir"]["description"].replace("\\<", "")


@pytest.mark.parametrize(("text", "markdown"), [
    ("oci://<registry>/charts", r"oci://\<registry\>/charts"),
    ("under <state dir>/workspaces", r"under \<state dir\>/workspaces"),
    ("a *b* _c_ `d` [e] \\f", r"a \*b\* \_c\_ \`d\` \[e\] \\f"),
    ("plain: v0.3.1, --no-sign (default 5)", "plain: v0.3.1, --no-sign (default 5)"),
])
def test_as_markdown_escapes_what_markdown_would_swallow(text: str, markdown: str) -> None:
    """Angle brackets, emphasis, code and link marks and backslashes are escaped; other text is left alone."""
    assert as_markdown(text) == markdown


def test_cli_defaults_are_the_flow_defaults() -> None:
    """`fma-release run TAG --source S` gives the flow the same parameters the form's defaults would."""
    args = _parser().parse_args(["run", "v0.3.1", "--source", "src"])
    parameters = cli_parameters(args)
    for option in OPTIONS:
        if not option.required:
            assert parameters[option.name] == option.default, option.name
    assert ReleaseRequest.from_parameters(parameters).tag == "v0.3.1"


def test_cli_flags_map_onto_options() -> None:
    """--no-sign turns sign off, --retry-delay sets retry_base_delay, paths arrive as strings."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["v1.0.0", "--source", "s", "--no-sign", "--retry-delay", "0.5", "--workdir", "w",
                              "--dry-run"])
    parameters = cli_parameters(args)
    assert parameters["sign"] is False and parameters["retry_base_delay"] == 0.5
    assert parameters["workdir"] == "w" and parameters["dry_run"] is True


def test_with_options_writes_signature_and_args_section() -> None:
    """A **parameters function gets the options' signature and an Args: line per option."""

    @with_options("Do it.", OPTIONS[:2])
    def fn(**parameters: object) -> object:
        return parameters

    assert str(inspect.signature(fn)) == "(*, tag: str, source: str)"
    assert fn.__doc__ == flow_docstring("Do it.", OPTIONS[:2])
    assert "    source: git URL or local path" in (fn.__doc__ or "")


@pytest.mark.parametrize(
    ("run", "allowed", "changed"),
    [
        ({"tag": "v1.0.0", **DEPLOYED}, "", []),  # the deployment's own values
        ({"tag": "v1.0.0", **DEPLOYED, "push_attempts": 9, "dry_run": True}, "", []),  # form fields
        ({"tag": "v1.0.0", **DEPLOYED, "source": "https://attacker.invalid/x.git"}, "", ["source"]),
        ({"tag": "v1.0.0", **DEPLOYED, "source": "https://attacker.invalid/x.git"}, "source", []),
        ({"tag": "v1.0.0", **DEPLOYED, "workdir": "/etc", "force": True}, "", ["workdir", "force"]),
        ({"tag": "v1.0.0", **DEPLOYED, "sign": False}, "", ["sign"]),  # unset there: pinned to the default
    ],
)
def test_a_deployments_run_may_change_only_form_fields(run: dict[str, object], allowed: str,
                                                       changed: list[str]) -> None:
    """What differs from the deployment's parameters, outside the form and the operator's allowance."""
    assert pinned_changes(run, DEPLOYED, form_fields(allowed)) == changed


def test_form_fields_are_the_tag_and_the_retry_knobs() -> None:
    assert set(FORM_FIELDS) == {"tag", "dry_run", "push_attempts", "retry_base_delay"}


def test_unknown_form_field_is_one_line() -> None:
    with pytest.raises(ConfigError, match="FMA_FORM_FIELDS names sorce, which are no options"):
        form_fields("sorce")


def test_serve_adds_promote_release_when_asked() -> None:
    """`fma-release serve --promote-to` serves promote-release from --registry to that registry; without it, the two."""
    from flows.serving import ServeOptions, build_deployments

    options = ServeOptions(source="/src", registry="a.io/x", repo="o/r", watch_interval=0)
    assert [d.name for d in build_deployments(options)] == ["publish-release", "watch-releases"]
    *_, promote = build_deployments(ServeOptions(source="/src", registry="a.io/x", repo="o/r", watch_interval=0,
                                                 promote_to="b.io/y"))
    assert promote.name == "promote-release"
    assert promote.parameters == {"from_registry": "a.io/x", "to_registry": "b.io/y"}


def test_the_promote_flow_takes_the_promotion_options() -> None:
    """promote-release's parameters are PROMOTE_OPTIONS, keyword-only, with their help as the form's descriptions."""
    import inspect

    from flows.promote import promote_flow
    from tasks.run.options import PROMOTE_OPTIONS

    parameters = inspect.signature(promote_flow.fn).parameters
    assert list(parameters) == [o.name for o in PROMOTE_OPTIONS]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert "to_registry: the image registry to promote it to" in (promote_flow.fn.__doc__ or "")
