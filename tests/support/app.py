"""What tests read of, and send to, a running app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def engine_of(client: TestClient) -> Engine:
    """The state store of a running app."""
    engine: Engine = client.app.state.services.engine  # type: ignore[attr-defined]
    return engine
