"""Real servers for the tests: a free port, and ``uvicorn`` as a subprocess in its own process
group (the ledger's concurrency and crash tests), with the process helpers they use."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (it may be taken before it is used: callers retry)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- uvicorn as a subprocess -------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


# Start failures worth another try: a free port taken before uvicorn bound it.
RETRY_START_ON = ("address already in use",)


class Server:
    """``uvicorn server:create_app --factory`` as a subprocess in its own process group.

    Only this group is ever signalled: ``stop`` terminates it (SIGTERM, then SIGKILL), including
    executor workers orphaned by a killed server process.
    """

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        database_url: str | None = None,
        workers: int = 1,
        executor_workers: int = 1,
        query_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.workers = workers
        self.env = {
            **os.environ,
            "VEIL_DATA_DIR": str(data_dir.resolve()),
            "VEIL_WORKERS": str(executor_workers),
            "VEIL_WORKER_THREADS": "1",
            "VEIL_QUERY_TIMEOUT_S": str(query_timeout_s),
        }
        self.env.pop("VEIL_DATABASE_URL", None)
        if database_url is not None:
            self.env["VEIL_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> None:
        for _attempt in range(3):  # a free port can be taken before uvicorn binds it
            self.port = free_port()
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "server:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                # A 2-core CI machine under load: a slow health-check answer must not get a busy
                # worker restarted, nor an idle keep-alive connection be closed under a client
                # that is about to reuse it (both reset connections mid-test).
                "--timeout-worker-healthcheck",
                "60",
                "--timeout-keep-alive",
                "120",
                "--log-level",
                "info",
            ]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready(timeout_s):
                return
            self.stop()
            if not any(sign in self.log() for sign in RETRY_START_ON):
                break
        raise AssertionError(f"the server did not start; its log:\n{self.log()[-4000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        """Ready when /healthz answers and every uvicorn worker finished its startup."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        start_mark = len(self.log())
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            started = self.log()[start_mark:].count("Application startup complete")
            if started >= self.workers:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return True
            time.sleep(0.1)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group is the server's own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None


@contextlib.contextmanager
def running_server(data_dir: Path, log_path: Path, **kwargs: object) -> Iterator[Server]:
    server = Server(data_dir, log_path, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
