"""Slow clients against a served app, over real sockets: a request's headers and body must arrive
within their timeouts, and one client address may hold only so many connections at once."""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sandbox.config import Settings
from tests.support.app import serving

HEADER_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 1.0
PER_ADDRESS = 3


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _settings(demo_dir: Path, factory: pytest.TempPathFactory) -> Settings:
    data_dir = factory.mktemp("data") / "data"
    shutil.copytree(demo_dir, data_dir)
    return Settings(data_dir=data_dir, workers=1, worker_threads=1)


@pytest.fixture(scope="module")
def slow_server(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """Short header and body timeouts (the per-address cap high enough not to matter)."""
    settings = _settings(demo_dir, tmp_path_factory)
    with serving(settings, header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S) as url:
        yield _address(url)


@pytest.fixture(scope="module")
def capped_server(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """A low per-address cap (the timeouts long enough not to matter)."""
    settings = _settings(demo_dir, tmp_path_factory)
    with serving(settings, connections_per_address=PER_ADDRESS, header_timeout_s=30) as url:
        yield _address(url)


def _connect(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(address, timeout=10, source_address=(source, 0))
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket, limit_s: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``limit_s``)."""
    received = b""
    deadline = time.monotonic() + limit_s
    while True:
        assert time.monotonic() < deadline, f"still open after {limit_s} s: {received!r}"
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _read_response(sock: socket.socket) -> bytes:
    """One whole response of a kept-alive connection (its body has a Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return received


def _problem(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    problem: dict[str, object] = json.loads(body)
    return problem


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: veil\r\n\r\n"


def test_a_client_that_stalls_in_its_headers_gets_408_and_is_disconnected(
    slow_server: tuple[str, int],
) -> None:
    with _connect(slow_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: veil\r\nX-Half: a")
        response = _read_until_closed(sock)
        waited = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert _problem(response)["code"] == "request_timeout"
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 3


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    slow_server: tuple[str, int],
) -> None:
    with _connect(slow_server) as sock:
        started = time.monotonic()
        response = _read_until_closed(sock)
        waited = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert waited < HEADER_TIMEOUT_S + 3


def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_timeout(
    slow_server: tuple[str, int],
) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(HEALTHZ)
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next one stalls
        response = _read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408 "), response


def test_a_dripping_body_stops_being_read(slow_server: tuple[str, int]) -> None:
    declared = 100_000
    with _connect(slow_server) as sock:
        sock.sendall(
            b"POST /v1/queries HTTP/1.1\r\nHost: veil\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % declared
        )
        started = time.monotonic()
        sent = 1
        while time.monotonic() - started < BODY_TIMEOUT_S + 5:  # one byte every 20 ms
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break
            try:
                sock.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        response = _read_until_closed(sock)
        waited = time.monotonic() - started
    assert sent < declared
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert _problem(response)["code"] == "request_timeout"
    assert BODY_TIMEOUT_S * 0.8 <= waited < BODY_TIMEOUT_S + 3


def _served(sock: socket.socket) -> bool:
    sock.sendall(HEALTHZ)
    return _read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_one_address_holds_at_most_its_cap_of_connections(
    capped_server: tuple[str, int],
) -> None:
    held = [_connect(capped_server) for _ in range(PER_ADDRESS)]
    try:
        for sock in held:  # each is in the middle of its request line
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with _connect(capped_server) as extra:
            started = time.monotonic()
            with contextlib.suppress(OSError):  # the refusal may come before the request
                extra.sendall(HEALTHZ)
            refused = _read_until_closed(extra, limit_s=3)
            assert time.monotonic() - started < 3
        assert refused.startswith(b"HTTP/1.1 429 "), refused
        problem = _problem(refused)
        assert problem["code"] == "too_many_connections"
        assert b"retry-after: 1" in refused.lower()
        # Another address is not affected.
        with _connect(capped_server, source="127.0.0.2") as other:
            assert _served(other)
        # The held connections were kept, and are served.
        for sock in held:
            sock.sendall(b"Host: veil\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        # One closed: its place is free again.
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            with _connect(capped_server) as again:
                try:
                    if _served(again):
                        break
                except (AssertionError, OSError):
                    pass
            assert time.monotonic() < deadline, "a freed place was not given back"
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()
