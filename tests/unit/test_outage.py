"""Telling an unreachable Prefect server apart from other faults (tasks/control/outage.py)."""

from __future__ import annotations

import httpx
import pytest

from tasks.control.outage import outage_line, server_unreachable, unreachable_before_done
from tasks.core.errors import RegistryError


def _raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as err:
        return err


@pytest.mark.parametrize("err", [
    httpx.ConnectError("All connection attempts failed"),
    httpx.ConnectTimeout("timed out"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_connection_failures_are_an_unreachable_server(err: BaseException) -> None:
    assert server_unreachable(err)


def test_the_cause_and_exception_groups_are_looked_into() -> None:
    wrapped = _raised_from(RuntimeError("finishing the flow run failed"), httpx.ConnectError("refused"))
    assert server_unreachable(wrapped)
    assert server_unreachable(BaseExceptionGroup("cleanup", [ValueError("x"), httpx.ConnectError("refused")]))


@pytest.mark.parametrize("err", [
    None,
    RegistryError("registry 127.0.0.1:5001 refused the push"),
    httpx.HTTPStatusError("500", request=httpx.Request("GET", "http://x"), response=httpx.Response(500)),
    httpx.ReadTimeout("read timed out"),  # the server is there, only slow
    ValueError("bad"),
])
def test_other_faults_are_not(err: BaseException | None) -> None:
    assert not server_unreachable(err)


def test_a_cycle_of_causes_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert not server_unreachable(a)


def test_the_outage_line_is_one_line_naming_the_log_file() -> None:
    line = outage_line("/state/logs/v0.3.1.log")
    assert "\n" not in line
    assert "Prefect server cannot be reached" in line
    assert "incomplete" in line
    assert line.endswith("/state/logs/v0.3.1.log")


def test_the_line_of_a_run_that_did_not_finish_names_the_server_and_the_fix() -> None:
    line = unreachable_before_done("http://127.0.0.1:4300/api")
    assert "\n" not in line
    assert "http://127.0.0.1:4300/api cannot be reached" in line
    assert "re-run the same tag" in line
    assert "server at" not in unreachable_before_done("")


def test_one_look_at_the_health_endpoint_tells_a_gone_server_from_a_busy_one() -> None:
    """Refused is gone; a 503 (a busy SQLite server) is reachable, left to the client's retries."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tasks.control.outage import api_reachable

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    busy = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    try:
        assert api_reachable(f"http://127.0.0.1:{busy.server_address[1]}/api")
        assert not api_reachable(f"http://127.0.0.1:{port}/api", timeout=1)
        assert api_reachable(None)
    finally:
        busy.shutdown()


def test_the_release_error_a_failed_server_call_replaced_is_found() -> None:
    """A push failed; leaving the tag slot then failed on the gone server: the push's error is the answer."""
    from tasks.control.outage import masked_release_error
    from tasks.core.errors import ImagesFailedError

    def masked() -> BaseException:
        try:
            try:
                raise ImagesFailedError({"requester": "push failed after 2 attempt(s)"})
            except ImagesFailedError:
                raise httpx.ConnectError("All connection attempts failed")  # noqa: B904 - as __aexit__ does
        except httpx.ConnectError as err:
            return err

    found = masked_release_error(masked())
    assert found is not None and "requester" in str(found)
    assert masked_release_error(httpx.ConnectError("refused")) is None


def test_a_refused_connection_to_a_registry_or_an_engine_is_not_the_server() -> None:
    """As a registry killed mid-release fails a chart's registry read: the refused connection sits under requests'
    and urllib3's errors. The run's log records it with its traceback; it must not mark the Prefect server gone."""
    import requests
    import urllib3

    refused = ConnectionRefusedError(111, "Connection refused")
    new_connection = _raised_from(urllib3.exceptions.NewConnectionError(None, "Failed to establish"), refused)  # type: ignore[arg-type]
    connection = _raised_from(requests.exceptions.ConnectionError("Max retries exceeded"), new_connection)
    err = _raised_from(RegistryError("cannot reach the registry 127.0.0.1:5001 (ConnectionError)"), connection)
    assert not server_unreachable(err)
    assert server_unreachable(_raised_from(RegistryError("finishing"), httpx.ConnectError("refused")))


def test_a_command_that_lost_the_server_names_it_and_serve_says_its_deployments_were_not_paused() -> None:
    from tasks.control.outage import unreachable

    served = unreachable("http://prefect.example:4200/api", "serve")
    assert "http://prefect.example:4200/api" in served and "without pausing its deployments" in served
    assert "run fma-release routes again" in unreachable("http://prefect.example:4200/api", "routes")
    assert "\n" not in served


@pytest.mark.parametrize("lost", [
    httpx.ConnectError("All connection attempts failed"),
    "websocket",
])
def test_a_library_record_about_the_lost_server_prints_as_one_line(lost: BaseException | str) -> None:
    import logging
    import sys

    from websockets.exceptions import ConnectionClosedError

    from flows.client_logs import _OneLineWhenServerGone

    error = ConnectionClosedError(None, None) if lost == "websocket" else lost
    assert isinstance(error, BaseException)
    try:
        raise error
    except BaseException:
        record = logging.LogRecord("prefect.FlowRunCancellingObserver", logging.WARNING, __file__, 1,
                                   "The websocket failed with an %s.", ("exception",), sys.exc_info())
    assert _OneLineWhenServerGone().filter(record)
    line = logging.Formatter().format(record)
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("The websocket failed with an exception. (") and type(error).__name__ in line


def test_a_record_about_another_fault_keeps_its_traceback() -> None:
    import logging
    import sys

    from flows.client_logs import _OneLineWhenServerGone

    try:
        raise ValueError("a bug")
    except ValueError:
        record = logging.LogRecord("prefect.runner", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert _OneLineWhenServerGone().filter(record)
    assert "Traceback" in logging.Formatter().format(record)


def test_the_one_line_about_a_lost_server_masks_a_secret_in_the_error() -> None:
    import logging
    import sys

    from flows.client_logs import _OneLineWhenServerGone
    from tasks.core.redact import register

    secret = "s3cr3t-in-the-url-0f1e2d"
    register(secret)
    try:
        raise httpx.ConnectError(f"cannot connect to https://user:{secret}@prefect.example/api")
    except httpx.ConnectError:
        record = logging.LogRecord("prefect.runner", logging.WARNING, __file__, 1, "poll failed", None,
                                   sys.exc_info())
    assert _OneLineWhenServerGone().filter(record)
    line = logging.Formatter().format(record)
    assert secret not in line and "ConnectError" in line
