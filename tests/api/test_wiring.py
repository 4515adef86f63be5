"""Explicit wiring, fail closed: every service that changes state is built once with the audit
log, and none can be built without one."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.errors import ServiceUnavailable


def recording_services(client: TestClient) -> Iterator[Any]:
    """The app's services that hold the audit log, nested ones included."""
    services = client.app.state.services  # type: ignore[attr-defined]
    todo: list[Any] = [getattr(services, f.name) for f in dataclasses.fields(services)]
    seen: set[int] = set()
    while todo:
        service = todo.pop()
        if id(service) in seen or not hasattr(service, "__dict__"):
            continue
        seen.add(id(service))
        if dataclasses.is_dataclass(service):
            todo.extend(getattr(service, f.name) for f in dataclasses.fields(service))
        elif "audit" in vars(service) and type(service).__module__.startswith("sandbox."):
            yield service
            todo.extend(v for v in vars(service).values() if hasattr(v, "audit"))


def test_every_service_shares_the_apps_audit_log(client: TestClient) -> None:
    audit = client.app.state.services.audit  # type: ignore[attr-defined]
    found = list(recording_services(client))
    names = {type(s).__name__ for s in found}
    assert {"Administration", "Ledger", "Grants", "Charges", "QueryService"} <= names
    assert {"VerificationService", "ConsentService", "ReceiptService", "QuotaService"} <= names
    assert {"Zones", "Providers", "Loads", "Versions", "Issues"} <= names
    assert all(s.audit is audit for s in found)


def test_no_service_can_be_built_without_the_audit_log(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    # what a constructor takes, found on the service itself or among the app's parts
    pool = {f.name: getattr(services, f.name) for f in dataclasses.fields(services)}
    pool["keys"] = services.receipts.keys
    for service in recording_services(client):
        params = inspect.signature(type(service)).parameters
        assert "audit" in params, type(service).__name__
        arguments = {
            name: getattr(service, name) if hasattr(service, name) else pool[name]
            for name in params
            if name != "audit" and (hasattr(service, name) or name in pool)
        }
        missing = [
            name
            for name, param in params.items()
            if name != "audit" and name not in arguments and param.default is param.empty
        ]
        assert not missing, (type(service).__name__, missing)
        with pytest.raises(ServiceUnavailable):
            type(service)(audit=None, **arguments)
