"""The one way tests build and start the app: ``running_app`` (in process, a started
``TestClient``) and ``serving`` (uvicorn on a free port, for commands run with ``--url``), both
from a ``Settings`` and optional changes to it; and what tests read of a running app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from sandbox.api.connections import server_config
from sandbox.config import Settings
from server import create_app
from tests.support.servers import free_port


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def changed(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with ``changes`` (validated, as if given to ``Settings``; the environment is
    not read again)."""
    if not changes:
        return settings
    return Settings.model_validate({**settings.model_dump(), **changes})


def build_app(settings: Settings, **changes: Any) -> FastAPI:
    """The app of ``settings`` (with ``changes``), not started."""
    return create_app(changed(settings, **changes))


@contextmanager
def running_app(
    settings: Settings, *, raise_server_exceptions: bool = True, **changes: Any
) -> Iterator[TestClient]:
    """The app of ``settings`` (with ``changes``), started: its lifespan has built every service,
    and it is shut down (workers and all) when the block ends."""
    app = build_app(settings, **changes)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


@contextmanager
def serving(settings: Settings, **changes: Any) -> Iterator[str]:
    """The app of ``settings`` (with ``changes``) served by uvicorn in a thread on a free port, as
    ``veil serve`` serves it (its connection limits included): its base URL."""
    port = free_port()
    settings = changed(settings, **changes)
    server = uvicorn.Server(
        server_config(
            create_app(settings), settings, host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def engine_of(client: TestClient) -> Engine:
    """The state store of a running app."""
    engine: Engine = client.app.state.services.engine  # type: ignore[attr-defined]
    return engine
