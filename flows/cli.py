"""``fma-release``: the command line.

Errors print as one line on stderr with a non-zero exit; ``--debug`` adds the
traceback. Input is checked before Prefect starts, so a bad tag or config
costs nothing and touches nothing. This module imports only the standard
library and the options at the top: ``--help``, a bad tag or a bad option
answer without loading Prefect, the Docker SDK or Helm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ReleaseError
from tasks.core.redact import redact
from tasks.run.options import DEFAULT_REGISTRY, PROMOTE_OPTIONS, add_cli_arguments, cli_parameters

if TYPE_CHECKING:
    from tasks.run.result import ReleaseResult
    from tasks.run.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fma-release",
        description="Release a tag of Fast Model Actuation: images, Helm chart, summary.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Prefect's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="release TAG of the source")
    add_cli_arguments(run)  # the release's options (tasks/run/options.py), as the flow's parameters
    run.add_argument("--summary-json", type=Path, help="write the summary as JSON to this file")
    run.add_argument("--verbose", action="store_true", help="show Prefect's run logs instead of progress")
    run.add_argument("--dask", metavar="ADDRESS",
                     help="run the tasks on a Dask cluster: tcp://scheduler:8786, or 'local' (needs the dask extra)")
    verify = sub.add_parser("verify", help="check a published release's signatures and attestations")
    verify.add_argument("tag", help="the release tag")
    verify.add_argument("--key", required=True, type=Path, help="the release's cosign public key (cosign.pub)")
    verify.add_argument("--registry", default=DEFAULT_REGISTRY, help=f"image registry (default {DEFAULT_REGISTRY})")
    verify.add_argument("--chart-registry", help="OCI URL of the charts (default oci://<registry>/charts)")
    verify.add_argument("--config", type=Path, help="release config naming the images (default: release.yaml)")
    verify.add_argument("--source", default="",
                        help="the source the release must have been built from, as the release was given it")
    verify.add_argument("--chart", action="append", default=[], metavar="NAME",
                        help="a chart of the release to verify too (repeat for several)")
    promote = sub.add_parser("promote", help="copy a published release to another registry, signatures and all")
    add_cli_arguments(promote, PROMOTE_OPTIONS)  # the promotion's options (tasks/run/options.py)
    promote.add_argument("--summary-json", type=Path, help="write the destination's summary as JSON to this file")
    promote.add_argument("--verbose", action="store_true", help="show Prefect's run logs instead of progress")
    from flows.cli_triggers import add_trigger_commands

    add_trigger_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code = _main(args)
    if args.command == "run" and "tasks.control.outage" in sys.modules:
        from tasks.control.outage import OUTCOME

        if OUTCOME.unreachable:
            _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process without Prefect's at-exit drain: with the server gone, its EventsWorker
    would try every undelivered event again, about 7 s each (a minute and more for one release)."""
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()  # the run's log file is complete
    os._exit(code)


def _main(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per way a run ends
    try:
        commands = {"run": _run, "verify": _verify, "promote": _promote}
        if args.command in commands:
            return commands[args.command](args)
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args))
    except ReleaseError as err:
        if args.debug:
            raise
        print(f"fma-release: error: {redact(str(err))}", file=sys.stderr)
        from tasks.control.outage import OUTCOME

        if args.command == "run" and OUTCOME.unreachable:
            return _server_lost()
        return err.exit_code
    except KeyboardInterrupt:
        print("fma-release: interrupted; nothing more was pushed. Re-run the same tag to finish.",
              file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        from tasks.control.outage import masked_release_error, server_unreachable

        if args.command == "run" and server_unreachable(err):
            masked = masked_release_error(err)
            if masked is not None:
                print(f"fma-release: error: {redact(str(masked))}", file=sys.stderr)
            return _server_lost()
        if server_unreachable(err):  # any other command that talks to the server: serve, routes, worker...
            from tasks.control.outage import SERVER_LOST_EXIT, unreachable
            from tasks.run.settings import Settings

            print(f"fma-release: error: {unreachable(Settings.from_env().prefect_api_url, args.command)}",
                  file=sys.stderr)
            return SERVER_LOST_EXIT
        first = redact(str(err)).splitlines()[0] if str(err) else ""
        print(f"fma-release: internal error: {type(err).__name__}: {first} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 2


def _server_lost() -> int:
    """The end of a run that lost the Prefect server before everything was published: one line, exit 3."""
    from tasks.control.outage import OUTCOME, SERVER_LOST_EXIT, unreachable_before_done
    from tasks.run.settings import Settings

    OUTCOME.lost_server()
    print(f"fma-release: error: {unreachable_before_done(Settings.from_env().prefect_api_url)}", file=sys.stderr)
    return SERVER_LOST_EXIT


def _run(args: argparse.Namespace) -> int:
    # Decide everything that can be decided without running anything.
    from tasks.run.context import ReleaseRequest
    from tasks.run.settings import Settings

    parameters = cli_parameters(args)
    ReleaseRequest.from_parameters(parameters)
    runner = None
    if args.dask:
        from flows.runners import task_runner

        runner = task_runner(args.dask)

    settings = Settings.from_env()
    log_file = _prepare_logs(args, settings)
    started = time.monotonic()
    from flows import cancel
    from flows.progress_view import ProgressView
    from tasks.control.outage import OUTCOME, outage_line
    from tasks.core import progress
    from tasks.summary import render_summary

    local_server = _local_server()
    cancel.install(settings.prefect_api_url or local_server)
    view = ProgressView()
    reports: list[tuple[float, str, str]] = []

    def note(item: str, state: str, _detail: str) -> None:
        reports.append((time.monotonic(), item, state))

    progress.subscribe(view.update)
    progress.subscribe(note)
    try:
        result = _release_surviving_outage(runner, parameters, local_server)
    finally:
        progress.unsubscribe(view.update)
        progress.unsubscribe(note)
        view.close()
    if args.summary_json:
        import json

        args.summary_json.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    if OUTCOME.unreachable:
        print(outage_line(str(log_file) if log_file else "the output above"), file=sys.stderr)
    print(render_summary(result))
    from prefect.settings import get_current_settings

    from flows.timing import where_time_went

    # The environment or the active Prefect profile (prefect config set PREFECT_API_URL=...).
    configured = bool(get_current_settings().api.url or local_server)
    took = where_time_went(started, time.monotonic(), reports, configured)
    print(f"released {args.tag} in {took}", file=sys.stderr)
    return 0


def _local_server() -> str:
    """The local Prefect server's API (FMA_LOCAL_PREFECT_URL, default the one scripts/services.sh starts on
    127.0.0.1:4200) when no server is configured and it answers its health check; "" otherwise. A run
    then reports there instead of starting a temporary server (seconds each time), and says so once."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return ""
    url = os.environ.get("FMA_LOCAL_PREFECT_URL", "http://127.0.0.1:4200/api").rstrip("/")
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as answer:  # noqa: S310 - a loopback URL of ours
            healthy = answer.status == 200
    except OSError:
        healthy = False
    if healthy:
        print(f"fma-release: reporting to the local Prefect server at {url} (PREFECT_API_URL is not set)",
              file=sys.stderr)
        return url
    # Its start-up takes 10-15 s, more on a busy machine: said now, so the console is not silent meanwhile.
    print(f"fma-release: no Prefect server answers at {url} and PREFECT_API_URL is not set: starting one for "
          "this run only (start a lasting one with scripts/services.sh)", file=sys.stderr)
    return ""


def _verify(args: argparse.Namespace) -> int:
    from tasks.core.errors import VerificationError
    from tasks.run.config import DEFAULT_CONFIG, load_config
    from tasks.run.settings import Settings
    from tasks.supplychain.verify import VerifyRequest, check_inputs, failure_line, render_table, verify_release

    request = VerifyRequest(
        tag=args.tag, public_key=args.key, registry=args.registry, chart_registry=args.chart_registry,
        config=load_config(args.config or DEFAULT_CONFIG), charts=tuple(args.chart), source=args.source,
    )
    check_inputs(request)
    checks = verify_release(request, Settings.from_env())
    print(render_table(checks))
    failed = failure_line(checks)
    if failed:
        raise VerificationError(failed)
    print(f"verified {args.tag}: {len(checks)} artifact(s), every signature and attestation checks out")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from tasks.promote.context import PromotionRequest
    from tasks.run.settings import Settings

    parameters = cli_parameters(args, PROMOTE_OPTIONS)
    request = PromotionRequest.from_parameters(parameters)  # bad input: one line, before Prefect starts
    settings = Settings.from_env()
    log_file = _prepare_logs(args, settings, "flows.promote")
    started = time.monotonic()
    from flows.progress_view import ProgressView
    from tasks.core import progress
    from tasks.summary import render_summary

    local_server = _local_server()
    view = ProgressView()
    progress.subscribe(view.update)
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.promote import promote

        with temporary_settings(updates={PREFECT_API_URL: local_server} if local_server else {}):
            result = promote(**parameters)
    finally:
        progress.unsubscribe(view.update)
        view.close()
    if args.summary_json:
        import json

        args.summary_json.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    print(render_summary(result))
    where = f" (log: {log_file})" if log_file else ""
    print(f"promoted {request.tag} from {request.from_registry} to {request.to_registry} in "
          f"{time.monotonic() - started:.1f}s{where}", file=sys.stderr)
    return 0


def _prepare_logs(args: argparse.Namespace, settings: Settings, flows_module: str = "flows.release") -> Path | None:
    """Set Prefect's client up for a CLI run; the run's log file, unless --verbose/--debug keep
    Prefect's logs on the console."""
    if args.verbose or args.debug:
        return None
    # Progress lines replace Prefect's console log; the run logs still go to the API, and what
    # Prefect's client says about itself goes to the log file.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    import importlib

    importlib.import_module(flows_module)  # Prefect configures its loggers on import; move them after
    from flows.client_logs import log_path, route_client_logs

    log_file = log_path(settings.state_dir, args.tag)
    route_client_logs(log_file)
    return log_file


def _release_surviving_outage(runner: Any, parameters: dict[str, Any], local_server: str = "") -> ReleaseResult:
    """Run the release; when the flow's last API calls fail because the Prefect server went away
    after everything was published, the result it had is the answer (tasks/control/outage.py)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.release import release
    from tasks.control.outage import CLIENT_MAX_RETRIES, OUTCOME, server_unreachable

    # Bound how long each call to an unreachable server is retried (tasks/control/outage.py), unless the
    # environment says otherwise (Prefect read it at import, before this could set a default).
    retries: dict[Any, Any] = (
        {} if "PREFECT_CLIENT_MAX_RETRIES" in os.environ else {PREFECT_CLIENT_MAX_RETRIES: CLIENT_MAX_RETRIES})
    if local_server:
        retries[PREFECT_API_URL] = local_server
    OUTCOME.reset()
    try:
        with temporary_settings(updates=retries):
            return release(runner, **parameters)
    except Exception as err:
        if OUTCOME.result is None or not server_unreachable(err):
            raise
        OUTCOME.lost_server()
        return OUTCOME.result


if __name__ == "__main__":
    raise SystemExit(main())
