"""The HTTP request being served, as the audit log records it: who made it (once the API key
checked out), which route, what services added to its record, and whether an entry of its own
committed.

Deliberately mutable and shared: the audit middleware makes one per request; the route hands it
on inside the :class:`~sandbox.access.model.Actor` it passes to services, so what a service
records here (annotations, "an entry was committed") is what the middleware reads afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
RECORD: Final = "veil.audit"  # where the HTTP layer keeps a request's record (the ASGI scope)


class RequestRecord:
    """One request: its id (the caller's ``X-Request-Id`` when it is well formed), method,
    path, route and parameters, client address, the member who made it, and its annotations."""

    def __init__(self, method: str, path: str, client: str | None, request_id: str | None) -> None:
        self.id = request_id if request_id and REQUEST_ID.match(request_id) else _new_request_id()
        self.method = method
        self.path = path
        self.client = client
        self.route: str | None = None
        self.params: dict[str, str] = {}
        self.member: str | None = None
        self.tenant: str | None = None
        self.role: str | None = None
        self.key: str | None = None
        self.refs: dict[str, Any] = {}
        self.sealed: dict[str, Any] = {}
        self.written = False  # an entry of this request committed (the audit log sets it)

    def identify(
        self,
        member: str,
        tenant: str,
        role: str,
        key: str | None,
        *,
        route: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Who makes the request (once the API key checked out) and, since routing is done by
        then, which route it is for."""
        self.member, self.tenant, self.role, self.key = member, tenant, role, key
        self.set_route(route, params)

    def set_route(self, route: Any, params: Mapping[str, Any] | None) -> None:
        """The matched route's path template and parameters (ids; long values cut)."""
        path = getattr(route, "path", None)
        if isinstance(path, str):
            self.route = path
            self.params = {str(k): str(v)[:128] for k, v in (params or {}).items()}

    def annotate(self, *, sealed: Mapping[str, Any] | None = None, **refs: Any) -> None:
        """Add to the request's record: ``refs`` in clear, ``sealed`` encrypted. They go into
        the request's own entry, whoever writes it (a service or the middleware), so a refused
        query still leaves its SQL text — sealed — in the log."""
        self.refs.update(refs)
        if sealed:
            self.sealed.update(sealed)

    def document(self) -> dict[str, Any]:
        """The ``request`` member of an entry."""
        return {
            "id": self.id,
            "method": self.method,
            "route": self.route or self.path,
            "params": dict(self.params),
        }


def _new_request_id() -> str:
    return "req_" + uuid.uuid4().hex
