"""``veil serve`` and ``make demo``: the port is checked before anything is built, the address is
printed once the server answers there, and ``make demo`` takes the port and host."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sandbox.cli.main import app
from tests.support.servers import REPO, free_port


def test_a_taken_port_fails_at_once_naming_it_before_the_demo_is_built(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = CliRunner().invoke(
            app, ["serve", "--demo", "--data-dir", str(data_dir), "--port", str(port)]
        )
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{port} is in use" in result.output
    assert "--port" in result.output and "make demo PORT=" in result.output
    assert "/docs" not in result.output  # no address of a server that is not ours
    assert not (data_dir / "state.db").exists()  # nothing was built


@contextmanager
def _veil(*args: str) -> Iterator[queue.Queue[str]]:
    """``veil ARGS`` in its own process group, its output lines in a queue; stopped at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from sandbox.cli.main import main; main()", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        yield lines
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _until(lines: queue.Queue[str], needle: str, timeout_s: float = 120) -> list[str]:
    """The output lines up to and including the first that holds ``needle``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no line with {needle!r} in {timeout_s} s; output:\n{''.join(seen)}")
        seen.append(line)
        if needle in line:
            return seen


def test_serve_prints_the_address_once_it_answers_there(demo_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(demo_dir, data_dir)  # the demo zone is built: a restart
    port = free_port()
    with _veil(
        "serve", "--demo", "--data-dir", str(data_dir), "--port", str(port), "--workers", "1"
    ) as lines:
        output = _until(lines, "/docs")
        # At once, before anything else: the printed address is this server's.
        docs = output[-1].split("http://", 1)[1].split()[0]
        assert docs == f"127.0.0.1:{port}/docs"
        assert httpx.get(f"http://{docs}", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["status"] == "ok"
    text = "".join(output)
    assert "first run only" not in text
    assert "already built" in text  # what a restart does is said
    assert "analyst" in text  # the demo keys, again


def _make_demo(*variables: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["make", "-n", "demo", *variables],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    serve = [line for line in result.stdout.splitlines() if " serve " in line]
    assert len(serve) == 1, result.stdout
    return serve[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_takes_the_port_and_host_from_its_command_line() -> None:
    assert "--port" not in _make_demo() and "--host" not in _make_demo()
    chosen = _make_demo("PORT=8123", "HOST=0.0.0.0")
    assert "--port 8123" in chosen and "--host 0.0.0.0" in chosen
    # A HOST or PORT that a shell or platform sets in the environment is not taken for them.
    inherited = _make_demo(env={"HOST": "workstation", "PORT": "80"})
    assert "--host" not in inherited and "--port" not in inherited
