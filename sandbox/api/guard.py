"""The ASGI middleware that applies the load limits of :mod:`sandbox.api.limits` to every request.

Order of checks, cheapest first, before any route runs:

1. the caller's token bucket: an API key's own (keyed by a hash of the key), or for a request
   without a key its client address's; an address whose bucket of unauthenticated requests is
   empty is refused whatever key it sends, and every answer ``401`` costs its address a token,
   so guessing keys is throttled per address (→ ``429 rate_limited``);
2. a declared ``Content-Length`` over ``VEIL_MAX_BODY_BYTES`` (→ ``413 payload_too_large``,
   answered without reading the body). A body without a length (chunked), or longer than it
   said, is counted while it streams: reading past the limit fails, and whatever the route then
   answers is replaced by the same ``413`` (a body is never read whole before it is refused).

The per-tenant in-flight limit needs the tenant, known only after authentication: the ``member``
dependency calls :func:`enter_tenant` (→ ``429 too_many_concurrent``) and this middleware frees
the slot when the response is complete. Refusals are RFC 9457 problems like every other error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.api import problems
from sandbox.api.limits import InFlight, TokenBuckets, retry_after, too_large
from sandbox.config import Settings
from sandbox.errors import PayloadTooLarge, RateLimited, TooManyConcurrent, VeilError

SCOPE_KEY = "veil.guard"


@dataclass
class _Request:
    """What the guard tracks for one request (shared with the dependency through the scope)."""

    guard: Guard
    tenant: str | None = None
    status: int = 0
    received: int = 0  # body bytes so far
    started: bool = False  # the response has started
    too_large: bool = False  # the body passed the limit before the response started
    _left: bool = field(default=False, repr=False)

    def leave(self) -> None:
        if self.tenant is not None and not self._left and self.guard.in_flight is not None:
            self._left = True
            self.guard.in_flight.leave(self.tenant)


class Guard:
    """The limits of one server process, built from the settings once per app."""

    def __init__(self, settings: Settings) -> None:
        self.buckets = (
            TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None
        )
        self.in_flight = (
            InFlight(settings.tenant_concurrency) if settings.tenant_concurrency > 0 else None
        )
        self.max_body_bytes = settings.max_body_bytes

    def admit(self, scope: Scope, headers: Headers) -> VeilError | None:
        """The refusal of a request before it runs, or ``None``."""
        if self.buckets is not None:
            address = _address(scope)
            key = _bearer(headers)
            wait = self.buckets.wait(address) if key is not None else 0.0
            if not wait:
                wait = self.buckets.take(address if key is None else _key_bucket(key))
            if wait:
                return RateLimited("too many requests from this caller", retry_after(wait))
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        return None

    def after(self, scope: Scope, headers: Headers, status: int) -> None:
        """Charge a failed authentication to the caller's address."""
        if self.buckets is not None and status == 401 and _bearer(headers) is not None:
            self.buckets.charge(_address(scope))


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return "addr:" + (str(client[0]) if client else "unknown")


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value is None or not value.startswith("Bearer "):
        return None
    return value.removeprefix("Bearer ").strip() or None


def _key_bucket(key: str) -> str:
    """Buckets are named by a hash: no API key is kept in memory beyond its request."""
    return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class GuardMiddleware:
    """Pure ASGI (no response buffering): refuses over-limit requests, frees tenant slots."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = self.guard.admit(scope, headers)
        if refused is not None:
            await problems.problem(refused, scope.get("path", ""))(scope, receive, send)
            return
        state = _Request(self.guard)
        scope[SCOPE_KEY] = state
        limit = self.guard.max_body_bytes

        async def counted_receive() -> Message:
            """The body, counted as it streams: past the limit, reading fails."""
            if state.too_large:
                raise too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                state.received += len(message.get("body", b""))
                if state.received > limit:
                    state.too_large = not state.started
                    raise too_large(limit)
            return message

        async def guarded_send(message: Message) -> None:
            """Whatever the app answers to a body it could not read whole becomes the 413."""
            if message["type"] == "http.response.start":
                state.started = True
                if state.too_large:
                    state.status = 413
                    refusal = problems.problem(too_large(limit), scope.get("path", ""))
                    await refusal(scope, receive, send)
                    return
                state.status = int(message["status"])
            elif state.too_large:
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except PayloadTooLarge:
            if state.started:
                raise
            state.status = 413
            refusal = problems.problem(too_large(limit), scope.get("path", ""))
            await refusal(scope, receive, send)
        finally:
            state.leave()
            self.guard.after(scope, headers, state.status)


def enter_tenant(request: Request, tenant: str) -> None:
    """Take one of ``tenant``'s in-flight slots for this request, or refuse it."""
    state = request.scope.get(SCOPE_KEY)
    if not isinstance(state, _Request) or state.tenant is not None:
        return
    in_flight = state.guard.in_flight
    if in_flight is None:
        return
    if not in_flight.enter(tenant):
        raise TooManyConcurrent(
            f"your tenant has {in_flight.limit} requests in flight; retry when one is done",
            retry_after=1,
        )
    state.tenant = tenant
