"""``fma-release tag | github-release | webhook | serve``: the commands around the release flow.

Each parser sets ``handler``; :func:`flows.cli.main` calls it and turns a
:class:`~tasks.core.errors.ReleaseError` into one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tasks.core.errors import ReleaseError
from tasks.run.options import DEFAULT_REGISTRY, DEFAULT_REPO


def add_trigger_commands(sub: Any) -> None:
    """Add the subcommands to the ``fma-release`` subparsers ``sub``."""
    tag = sub.add_parser("tag", help="create the annotated release tag in a local clone (step 1)")
    tag.add_argument("tag", help="release tag, e.g. v0.3.1 or v0.3.0-rc.1")
    tag.add_argument("--source", type=Path, required=True, help="path of a local clone of the source")
    tag.add_argument("--ref", default="HEAD", help="commit, branch or tag to tag (default HEAD)")
    tag.add_argument("--push", action="store_true", help="push the tag to the remote")
    tag.add_argument("--remote", default="origin", help="remote to push to (default origin)")
    tag.set_defaults(handler=_tag)

    rel = sub.add_parser("github-release", help="publish the GitHub release of TAG (step 2); token from GITHUB_TOKEN")
    rel.add_argument("tag", help="release tag, e.g. v0.3.1")
    rel.add_argument("--repo", default=DEFAULT_REPO, help=f"OWNER/NAME on GitHub (default {DEFAULT_REPO})")
    rel.add_argument("--api-url", default=None, help="GitHub API URL (GitHub Enterprise: https://HOST/api/v3)")
    rel.add_argument("--target", help="commit or branch for a tag that does not exist on GitHub yet")
    rel.add_argument("--breaking", type=Path, help="markdown file for the 'Breaking Changes' section")
    rel.add_argument("--upgrade-notes", type=Path, help="markdown file for the 'Upgrade Notes' section")
    rel.add_argument("--summary-json", type=Path,
                     help="a run's --summary-json: list its digests, signatures and verify command in the body")
    rel.set_defaults(handler=_github_release)

    hook = sub.add_parser("webhook", help="receive GitHub webhooks; secret from GITHUB_WEBHOOK_SECRET")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    hook.add_argument("--port", type=int, default=8780, help="port (default 8780)")
    hook.add_argument("--repository", default=os.environ.get("FMA_GITHUB_REPOSITORY", DEFAULT_REPO),
                      help="the only OWNER/NAME whose releases start a run (env FMA_GITHUB_REPOSITORY)")
    hook.set_defaults(handler=_webhook)

    serve = sub.add_parser("serve", help="serve the publish-release and watch-releases deployments on this machine "
                                            "(and promote-release with --promote-to)")
    serve.add_argument("--source", default=f"https://github.com/{DEFAULT_REPO}.git",
                       help="default source of publish-release runs")
    serve.add_argument("--registry", default=DEFAULT_REGISTRY, help="default image registry of runs")
    serve.add_argument("--config", help="default release config of runs")
    serve.add_argument("--chart-registry", help="default OCI URL for charts")
    serve.add_argument("--dry-run", action="store_true", help="runs build and package but push nothing")
    serve.add_argument("--repo", default=DEFAULT_REPO,
                       help="OWNER/NAME whose published releases trigger runs and are watched")
    serve.add_argument("--api-url", default=None, help="GitHub API URL for the watcher")
    serve.add_argument("--watch-interval", type=float, default=3600.0,
                       help="seconds between watcher runs (default 3600; 0 disables the schedule)")
    serve.add_argument("--promote-to", metavar="REGISTRY",
                       help="also serve promote-release: published releases copied from --registry to REGISTRY")
    serve.add_argument("--promote-chart-registry", metavar="OCI_URL",
                       help="where promote-release puts the charts (default oci://REGISTRY/charts)")
    serve.add_argument("--name-suffix", default="",
                       help="serve publish-release<SUFFIX> and watch-releases<SUFFIX>, beside another route's")
    serve.set_defaults(handler=_serve)

    routes = sub.add_parser("routes", help="the deployment routes on the Prefect server (work pool, serve)")
    routes.add_argument("--name-suffix", default="", help="the routes' name suffix (serve --name-suffix)")
    routes.set_defaults(handler=_routes)
    routes_sub = routes.add_subparsers(dest="routes_command")
    remove = routes_sub.add_parser("remove", help="remove a route's deployments and their triggers")
    remove.add_argument("route", choices=["pool", "served"],
                        help="pool: what prefect deploy made; served: what fma-release serve made")
    remove.add_argument("--name-suffix", default="", help="the route's name suffix (serve --name-suffix)")
    remove.set_defaults(handler=_routes)


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ReleaseError(f"cannot read {path} ({err.strerror}): pass an existing markdown file") from err


def _tag(args: argparse.Namespace) -> int:
    from tasks.forge.github import create_tag

    commit = create_tag(args.source, args.tag, ref=args.ref, push=args.push, remote=args.remote)
    where = f" and pushed to {args.remote}" if args.push else ""
    print(f"tagged {commit} as {args.tag}{where}")
    return 0


def _github_release(args: argparse.Namespace) -> int:
    from tasks.forge.github import DEFAULT_API_URL, create_github_release
    from tasks.summary import artifacts_from_summary_file

    artifacts = artifacts_from_summary_file(args.summary_json, args.tag) if args.summary_json else ""
    _configure_api_url(args.api_url)
    created = create_github_release(
        args.tag, args.repo, api_url=args.api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL,
        breaking=_read(args.breaking), upgrade=_read(args.upgrade_notes), target=args.target, artifacts=artifacts,
    )
    plan = created.plan
    kind = "pre-release" if plan.prerelease else ("release, marked Latest" if plan.make_latest else "release")
    since = f", notes since {plan.previous_tag}" if plan.previous_tag else ""
    print(f"published {plan.tag} on {args.repo} ({kind}{since}): {created.url}")
    return 0


def _webhook(args: argparse.Namespace) -> int:
    from flows.triggers import serve_webhook

    return serve_webhook(args.host, args.port, args.repository)


def _configure_api_url(api_url: str | None) -> None:
    """The operator's --api-url is this process's configured GitHub API: the only host the token goes to."""
    if api_url:
        os.environ["GITHUB_API_URL"] = api_url.rstrip("/")


def _serve(args: argparse.Namespace) -> int:
    from flows.client_logs import quiet_server_outages_on_console
    from flows.routes import TakeoverWatch, check_serve_may_start
    from flows.serving import ServeOptions, serve_deployments

    _configure_api_url(args.api_url)
    check_serve_may_start(args.name_suffix)  # never over a work pool's deployments
    quiet_server_outages_on_console()  # Prefect's logging is set up by now
    watch = TakeoverWatch(args.name_suffix)
    suffix = args.name_suffix
    served = f"publish-release{suffix}, watch-releases{suffix} and promote-release{suffix}" if args.promote_to \
        else f"publish-release{suffix} and watch-releases{suffix}"
    print(f"serving {served}; stop with Ctrl-C", file=sys.stderr)
    serve_deployments(ServeOptions(
        source=args.source, registry=args.registry, config=args.config, chart_registry=args.chart_registry,
        dry_run=args.dry_run, repo=args.repo, api_url=args.api_url, watch_interval=args.watch_interval,
        name_suffix=suffix, promote_to=args.promote_to, promote_chart_registry=args.promote_chart_registry,
    ), on_registered=watch.start)
    watch.stop()
    if watch.reason:
        raise ReleaseError(watch.reason)
    return 0


def _routes(args: argparse.Namespace) -> int:
    from flows.routes import list_routes, remove_route

    if getattr(args, "routes_command", None) == "remove":
        removed = remove_route(args.route, args.name_suffix)
        for d in removed.deployments:
            print(f"removed {d.name} ({d.describe()})")
        for t in removed.triggers:
            print(f"removed the automation {t.name!r}")
        if not removed.deployments and not removed.triggers:
            print(f"nothing to remove: no {args.route} route{' ' + args.name_suffix if args.name_suffix else ''} "
                  "on the server")
        return 0
    deployments, triggers = list_routes(args.name_suffix)
    ids = {d.id: d for d in deployments}
    for d in deployments:
        print(f"{d.name}: {d.describe()}")
    if not deployments:
        print("no publish-release or watch-releases deployment on the server")
    for t in triggers:
        targets = ", ".join(ids[i].name if i in ids else f"{i} (gone: fma-release routes remove ... deletes it)"
                            for i in t.deployment_ids) or "nothing"
        print(f"trigger {t.name!r} runs {targets}")
    return 0
