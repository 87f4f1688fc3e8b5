"""The release's options, defined once: the flow's parameters (and so the UI's run form), the CLI's
``run`` arguments, and what a deployment's run may change.

Each :class:`Option` is one field of the release request. :func:`flow_signature` and
:func:`flow_docstring` give the release flow its keyword-only parameters and their descriptions
(Prefect builds the run form from both); :func:`add_cli_arguments` and :func:`cli_parameters` give
the CLI the same options with the same defaults and help. Adding an option is one entry here and a
field of :class:`~tasks.run.context.ReleaseRequest`.

Who may set what (docs/security.md): the operator sets a deployment's parameters; a run of that
deployment (the UI form, an event, the watcher) may change only the options marked ``form`` and
those the operator allows (``FMA_FORM_FIELDS``). :func:`pinned_changes` decides it (pure).
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tasks.core.errors import ConfigError

DEFAULT_REPO = "llm-d-incubation/llm-d-fast-model-actuation"  # FMA on GitHub
DEFAULT_REGISTRY = f"ghcr.io/{DEFAULT_REPO}"


@dataclass(frozen=True)
class Option:
    """One option of a release: a flow parameter, a CLI argument, a field of the run form."""

    name: str  # the flow parameter
    kind: type  # str, bool, int, float, or list (of str: a CLI flag given once per item)
    default: Any  # ... (Ellipsis): required
    help: str  # the CLI's help and the form's description, one line
    flag: str = ""  # the CLI's --flag; "" for the positional TAG
    form: bool = False  # a deployment's run (UI form, event) may change it
    negated: str = ""  # a bool the CLI turns off with this flag instead (--no-sign for sign)
    optional: bool = False  # None is a value ("not given": the default applies)

    @property
    def required(self) -> bool:
        return self.default is Ellipsis

    @property
    def annotation(self) -> Any:
        kind: Any = list[str] if self.kind is list else self.kind
        return kind | None if self.optional else kind


OPTIONS: tuple[Option, ...] = (
    Option("tag", str, ..., "the release tag, e.g. v0.3.1 or v0.3.0-rc.1", form=True),
    Option("source", str, ..., "git URL or local path of the FMA source repository", flag="--source"),
    Option("registry", str, DEFAULT_REGISTRY, f"image registry (default {DEFAULT_REGISTRY})", flag="--registry"),
    Option("config", str, None, "release config file (default: this project's release.yaml)", flag="--config",
           optional=True),
    Option("chart_registry", str, None, "OCI URL for charts (default: oci://<registry>/charts)",
           flag="--chart-registry", optional=True),
    Option("dry_run", bool, False, "build and package, push nothing", flag="--dry-run", form=True),
    Option("workdir", str, None,
           "workspace name under <state dir>/workspaces, never a path (default: a new one, removed after success)",
           flag="--workdir", optional=True),
    Option("push_attempts", int, 5, "attempts per push, and per build whose engine was lost (default 5)",
           flag="--push-attempts", form=True),
    Option("retry_base_delay", float, 2.0, "first wait between push attempts in seconds, doubling (default 2)",
           flag="--retry-delay", form=True),
    Option("force", bool, False, "replace a chart version that already exists in the registry with other content",
           flag="--force"),
    Option("sign", bool, True, "sign images and charts, with provenance and SBOMs, when a key is configured "
           "(--no-sign: publish unsigned even with a key)", negated="--no-sign"),
    Option("stage", str, None, "stage registry: build, push and sign there, prove, then promote to the registry "
           "(default: the release config's stage, else none)", flag="--stage", optional=True),
    Option("github_repo", str, None, "GitHub repository OWNER/NAME whose release of the tag the run publishes: a "
           "draft from the start, published once the release is public (token from GITHUB_TOKEN)",
           flag="--github-repo", optional=True),
)
# The options of a promotion (``fma-release promote``, the promote-release flow): a published release copied
# from one registry to another (tasks/promote/).
PROMOTE_OPTIONS: tuple[Option, ...] = (
    Option("tag", str, ..., "the release tag to promote, e.g. v0.3.1", form=True),
    Option("from_registry", str, ..., "the image registry the release is published in", flag="--from"),
    Option("to_registry", str, ..., "the image registry to promote it to", flag="--to"),
    Option("config", str, None, "release config naming the images (default: this project's release.yaml)",
           flag="--config", optional=True),
    Option("chart_registry_from", str, None, "OCI URL of the release's charts (default: oci://FROM/charts)",
           flag="--chart-registry-from", optional=True),
    Option("chart_registry_to", str, None, "OCI URL the charts go to (default: oci://TO/charts)",
           flag="--chart-registry-to", optional=True),
    Option("charts", list, None, "a chart of the release to promote (repeat for several; default: every chart "
           "at the source with the tag's version, where the registry lists its repositories)", flag="--chart",
           optional=True),
    Option("push_attempts", int, 5, "attempts per copy, and per chart push (default 5)", flag="--push-attempts",
           form=True),
    Option("retry_base_delay", float, 2.0, "first wait between attempts in seconds, doubling (default 2)",
           flag="--retry-delay", form=True),
)
F = TypeVar("F", bound=Callable[..., Any])
BY_NAME = {option.name: option for option in OPTIONS}
FORM_FIELDS = tuple(option.name for option in OPTIONS if option.form)
_KNOWN = tuple(dict.fromkeys(option.name for option in (*OPTIONS, *PROMOTE_OPTIONS)))  # what FMA_FORM_FIELDS may name


def flow_signature(options: Iterable[Option] = OPTIONS) -> inspect.Signature:
    """The release flow's signature: every option keyword-only, with its type and default."""
    parameters = [
        inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=option.annotation,
                          default=inspect.Parameter.empty if option.required else option.default)
        for option in options
    ]
    return inspect.Signature(parameters, return_annotation=inspect.Signature.empty)


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


def as_markdown(text: str) -> str:
    """``text`` as Markdown that shows it as written (pure). The run form renders a field's description as
    Markdown, where ``<registry>`` is an HTML tag and is swallowed, and ``*`` or ``_`` may start emphasis:
    each such character is escaped with a backslash."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def flow_docstring(summary: str, options: Iterable[Option] = OPTIONS) -> str:
    """``summary`` and an ``Args:`` section Prefect reads the form's field descriptions from (Markdown:
    each help shows as written)."""
    lines = [summary, "", "Args:"]
    lines += [f"    {option.name}: {as_markdown(option.help)}" for option in options]
    return "\n".join(lines) + "\n"


def with_options(summary: str, options: Iterable[Option] = OPTIONS) -> Callable[[F], F]:
    """Give a ``**parameters`` function the options as its keyword-only signature and ``Args:``
    docstring, before Prefect's ``@flow`` reads both (the form, validation, the run's name)."""

    def decorate(fn: F) -> F:
        chosen = tuple(options)
        fn.__signature__ = flow_signature(chosen)  # type: ignore[attr-defined]
        fn.__doc__ = flow_docstring(summary, chosen)
        return fn

    return decorate


def add_cli_arguments(parser: argparse.ArgumentParser, options: Iterable[Option] = OPTIONS) -> None:
    """The options as arguments of ``fma-release run``: the tag positional, the rest as flags."""
    for option in options:
        if not option.flag and not option.negated:
            parser.add_argument(option.name, help=option.help)
        elif option.negated:
            parser.add_argument(option.negated, dest=option.name, action="store_false",
                                help="publish without signatures and attestations even when a key is configured")
        elif option.kind is bool:
            parser.add_argument(option.flag, dest=option.name, action="store_true", help=option.help)
        elif option.kind is list:
            parser.add_argument(option.flag, dest=option.name, action="append", default=None, help=option.help,
                                metavar="NAME")
        else:
            kind = Path if option.name in ("config", "workdir") else option.kind
            parser.add_argument(option.flag, dest=option.name, type=kind, required=option.required,
                                default=None if option.required else option.default, help=option.help,
                                metavar=option.flag.removeprefix("--").upper().replace("-", "_"))


def cli_parameters(args: argparse.Namespace, options: Iterable[Option] = OPTIONS) -> dict[str, Any]:
    """The flow's parameters from parsed CLI arguments (paths as strings, as the form sends them)."""
    parameters: dict[str, Any] = {}
    for option in options:
        value = getattr(args, option.name)
        parameters[option.name] = str(value) if isinstance(value, Path) else value
    return parameters


def form_fields(allowed: str, options: Iterable[Option] = OPTIONS) -> frozenset[str]:
    """What a deployment's run may change: the form's own fields and those ``allowed`` names
    (``FMA_FORM_FIELDS``, comma-separated) that are among ``options``; :class:`ConfigError` for a name
    that is no option of a release or a promotion (one worker may run both)."""
    chosen = tuple(options)
    extra = {name.strip() for name in allowed.split(",") if name.strip()}
    unknown = sorted(extra - set(_KNOWN))
    if unknown:
        raise ConfigError(f"FMA_FORM_FIELDS names {', '.join(unknown)}, which are no options of a release: "
                          f"use some of {', '.join(_KNOWN)}")
    return frozenset(option.name for option in chosen if option.form) | (extra & {o.name for o in chosen})


def pinned_changes(run: Mapping[str, Any], deployment: Mapping[str, Any], allowed: frozenset[str],
                   options: Iterable[Option] = OPTIONS) -> list[str]:
    """The options a deployment's run set to something other than the deployment's value, though
    only the operator may set them (pure). An option the deployment leaves unset is pinned to its default."""
    changed = []
    for option in options:
        if option.name in allowed or option.name not in run:
            continue
        pinned = deployment.get(option.name, None if option.required else option.default)
        if run[option.name] != pinned:
            changed.append(option.name)
    return changed
