"""The metrics endpoint on ``metrics_listen``: ``GET /metrics`` over HTTP/1.1, served from the daemon's event loop.

Not prometheus_client's ``start_http_server``: that serves from a thread of
its own, which would read the daemon's tables while the event loop changes
them. This one answers on the loop, between two messages, so a scrape sees one
consistent state; it is small because it needs little: one request per
connection, a head bounded in bytes and time, and a cap on connections, so a
stuck or hostile client cannot hold the daemon's memory or sockets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from eventbus.errors import ConfigError, MetricsUnavailable
from eventbus.settings import split_host_port

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventbus.metrics import Exporter
    from eventbus.service import Service

log = logging.getLogger(__name__)

#: longest request head read (request line and headers)
MAX_HEAD = 8192
#: time a client has to send its request head
HEAD_TIMEOUT_S = 5.0
#: time a client has to read the answer
WRITE_TIMEOUT_S = 30.0
#: connections served at once; more are answered 503 and closed without reading their request
MAX_CONNECTIONS = 16
#: time the connections being served have to end when the server closes
CLOSE_TIMEOUT_S = 1.0

NEED_EXTRA = "metrics_listen needs the metrics extra: pip install 'eventbus[metrics]'"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def load_exporter(service: Service, transport_pending: Callable[[], tuple[int, int]]) -> Exporter:
    """The service's :class:`~eventbus.metrics.Exporter`; :class:`MetricsUnavailable` without the extra.

    prometheus_client is imported here, on first use, so the daemon runs without it.
    """
    try:
        from eventbus.metrics import Exporter
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        raise MetricsUnavailable(
            "this daemon has no metrics: the metrics extra is not installed (pip install 'eventbus[metrics]')"
        ) from exc
    return Exporter(service, transport_pending)


class MetricsServer:
    """Serves ``render()`` (bytes of ``content_type``) at ``/metrics`` on one listening address."""

    def __init__(self, render: Callable[[], bytes], content_type: str) -> None:
        self._render = render
        self._content_type = content_type
        self._server: asyncio.AbstractServer | None = None
        #: connections being served: the task serving each, and its writer
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def start(self, address: str) -> None:
        """Listen on ``address`` (HOST:PORT); :class:`ConfigError` in one line if it cannot."""
        host, port = split_host_port(address)
        try:
            self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        except OSError as exc:  # address in use, unknown host, address not on this machine
            raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc
        log.info("serving metrics on http://%s/metrics", address)

    async def close(self) -> None:
        """Stop listening and drop the connections being served."""
        if self._server is None:
            return
        self._server.close()
        # closing a connection ends its task: a cancelled one is logged as an error by asyncio's
        # streams on Python 3.11, so cancelling is only the last resort
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, stuck = await asyncio.wait(list(self._connections), timeout=CLOSE_TIMEOUT_S)
            for task in stuck:
                task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                status, body, head_only = 503, b"too many connections\n", False
            else:
                status, body, head_only = await self._answer(reader)
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._respond(writer, status, body, head_only)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or was too slow: nothing to answer
        finally:
            del self._connections[task]
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        """``(status, body, HEAD request)`` for the request ``reader`` holds."""
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, b"request head not received in time\n", False
        except asyncio.LimitOverrunError:
            return 431, b"request head too large\n", False
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("closed before the end of the request head") from exc
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b"not an HTTP/1.x request\n", False
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", False
        if target.split("?", 1)[0] != "/metrics":
            return 404, b"not found: the metrics are at /metrics\n", method == "HEAD"
        try:
            return 200, self._render(), method == "HEAD"
        except Exception:  # a bug in one metric must not take the endpoint down
            log.exception("cannot render the metrics")
            return 500, b"cannot render the metrics; see the daemon's log\n", False

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, head_only: bool) -> None:
        content_type = self._content_type if status == 200 else "text/plain; charset=utf-8"
        allow = "Allow: GET, HEAD\r\n" if status == 405 else ""
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{allow}Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()


async def serve_metrics(address: str, service: Service) -> MetricsServer:
    """Serve the service's metrics on ``address``; :class:`ConfigError` without the extra or if it cannot bind."""
    try:
        exporter = service.metrics()
    except MetricsUnavailable as exc:
        raise ConfigError(NEED_EXTRA) from exc
    server = MetricsServer(exporter.exposition, exporter.content_type)
    await server.start(address)
    return server
