"""A tiny HTTP/1.1 proxy in front of a served app that fails the first request once: it drops
the connection after the server answered (the answer is lost) or as soon as the request is
passed on (the server is still at it), or answers 503 itself without passing the request on. It
records each request's ``Idempotency-Key`` and the status of each answer the server gave. Plain
sockets; bodies are read by ``Content-Length`` (what the app and httpx send)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

Failure = Literal["drop_answer", "drop_request", "unavailable"]


def _message(stream: BinaryIO) -> tuple[bytes, dict[str, str]] | None:
    """One HTTP message (head and body) from ``stream``, and its headers; None at the end."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            return None
        head += line
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return head + body, headers


class FailOnceProxy:
    def __init__(self, upstream: str, failure: Failure) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.failure = failure
        self.keys: list[str | None] = []  # the Idempotency-Key of each request, in order
        self.failed = False
        self.statuses: list[int] = []  # the status of each answer the server gave
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while (found := _message(stream)) is not None:
                request, headers = found
                with self.lock:
                    self.keys.append(headers.get("idempotency-key"))
                    fail = not self.failed
                    self.failed = True
                if fail and self.failure == "unavailable":
                    body = json.dumps({"status": 503, "code": "service_unavailable"}).encode()
                    conn.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 0\r\nConnection: close\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    return
                if fail and self.failure == "drop_request":  # the server is still at it
                    threading.Thread(target=self._forward, args=(request,), daemon=True).start()
                    return
                answer = self._forward(request)
                if fail or answer is None:  # drop_answer: the server answered, unheard
                    return
                conn.sendall(answer)

    def _forward(self, request: bytes) -> bytes | None:
        with socket.create_connection(self.upstream) as up, up.makefile("rb") as answers:
            up.sendall(request)
            answer = _message(answers)
        if answer is None:
            return None
        with self.lock:
            self.statuses.append(int(answer[0].split(b" ", 2)[1]))
        return answer[0]


@contextmanager
def failing_once(upstream: str, failure: Failure) -> Iterator[FailOnceProxy]:
    proxy = FailOnceProxy(upstream, failure)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.listener.close()
        thread.join(timeout=5)
