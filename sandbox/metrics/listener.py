"""The separate metrics listener (``metrics_port``): the exposition without an API key, on its
own address (``metrics_host``, loopback by default), served by prometheus-client's own HTTP
server in a thread of the server process."""

from __future__ import annotations

import errno
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from sandbox.metrics.instruments import Metrics, multiprocess

log = logging.getLogger("veil.metrics")


class Listener:
    """A running listener; :meth:`close` stops it and frees its port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def listen(metrics: Metrics, host: str, port: int) -> Listener | None:
    """Serve ``metrics`` on ``host:port``. In multiprocess mode the port is served by whichever
    server process took it first (each scrape sums every process): the others get ``None``.
    Otherwise a port that cannot be taken refuses to start (``OSError``)."""
    try:
        server, thread = start_http_server(port, host, registry=metrics.registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and multiprocess():
            log.info("metrics: %s:%d is served by another server process", host, port)
            return None
        raise
    return Listener(server, thread)
