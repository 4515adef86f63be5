"""``GET /metrics`` (the Prometheus text exposition, for zone staff: admins and operators) and
the middleware that counts every request by route template, method and status, its latency,
and problem answers by code. See docs/operations.md.

The route label is the matched route's path template (``/v1/datasets/{dataset}``), never the
path a caller sent; a request that matched no route is ``unmatched``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.access.model import MemberRole
from sandbox.api import problems
from sandbox.api.bodies import BodyRoute
from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.problems import MEDIA_TYPE
from sandbox.metrics.instruments import Metrics

router = APIRouter(tags=["operations"], route_class=BodyRoute)  # no body, but one reader

READERS = (MemberRole.ADMIN, MemberRole.OPERATOR)
MAX_PROBLEM_BYTES = 64 * 1024  # a problem body larger than this is counted as ``http_error``


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(actor: ActorDep, services: ServicesDep) -> Response:
    """Prometheus metrics of the zone (text exposition format): admins and operators. A
    separate listener without a key can serve them instead (``VEIL_METRICS_PORT``)."""
    actor.require_member(*READERS)
    found = services.metrics
    body = found.exposition() if found is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts each HTTP request once its answer has been sent (or has failed)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        problem: list[bytes] | None = None
        size = 0

        async def counted(message: Message) -> None:
            nonlocal status, problem, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if Headers(raw=message.get("headers", [])).get("content-type") == MEDIA_TYPE:
                    problem = []
            elif message["type"] == "http.response.body" and problem is not None:
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= MAX_PROBLEM_BYTES:
                    problem.append(chunk)
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if problem is None:  # the one renderer answers it with a 500 problem, outside
                problem, size = [b'{"code": "internal_error"}'], 0
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            self.metrics.request(
                route if isinstance(route, str) else None,
                str(scope.get("method", "")),
                status,
                time.perf_counter() - started,
            )
            if problem is not None:
                body = b"".join(problem) if size <= MAX_PROBLEM_BYTES else b""
                self.metrics.refused(problems.code_of(body))
