"""``Idempotency-Key`` on every mutating route (the protocol: :mod:`sandbox.idempotency`).

Routes do nothing for it. Once the caller is known (the ``member`` dependency), :func:`claim`
claims the key for the request — method, path and body — or answers a retry with the stored
response (same status, same body, and ``Idempotent-Replayed: true``). :class:`IdempotencyMiddleware`
then settles the claim by how the request was answered, before the answer leaves the server, so
a client that got an answer and retries always gets it again. Requests without the header, and
reads, are not touched. An upload's body is streamed to disk, never held: its key covers the
``Upload-*`` headers that describe the bytes (docs/onboarding.md#uploads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import idempotency
from sandbox.errors import RequestDoesNotValidate
from sandbox.vault.text import SealedText

__all__ = ["HEADER", "IdempotencyMiddleware", "claim", "install"]

T = TypeVar("T")

HEADER: Final = "Idempotency-Key"
MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SCOPE_KEY: Final = "veil.idempotency"
# Headers of an answer that belong to one transmission, not to the answer: never replayed.
_NOT_REPLAYED: Final = frozenset({b"content-length", b"date", b"server", b"connection"})


@dataclass(frozen=True)
class _Claim:
    member_id: str
    key: str


class Replayed(Exception):
    def __init__(self, replay: idempotency.Replay) -> None:
        super().__init__("replayed")
        self.replay = replay


async def claim(request: Request, member_id: str) -> None:
    """Claim the request's key for ``member_id``, or raise :class:`Replayed` with its answer."""
    key = request.headers.get(HEADER)
    if key is None or request.method not in MUTATING:
        return
    if not 1 <= len(key) <= idempotency.MAX_KEY_CHARS:
        raise RequestDoesNotValidate(
            f"{HEADER}: 1 to {idempotency.MAX_KEY_CHARS} characters",
            errors=[
                {
                    "field": f"header.{HEADER.lower()}",
                    "rule": "string_length",
                    "message": f"1 to {idempotency.MAX_KEY_CHARS} characters",
                }
            ],
        )
    # A route that streams its body to disk (an upload's) is never read whole here: its key
    # covers the headers that describe the bytes instead (``streamed_headers`` of its route).
    streamed: tuple[str, ...] | None = getattr(request.scope.get("route"), "streamed_headers", None)
    if streamed is not None:
        described = "\n".join(f"{h}:{request.headers.get(h, '')}" for h in streamed)
        body = described.encode()
    else:
        body = await request.body()
    digest = idempotency.request_hash(request.method, request.url.path, body)
    services = request.app.state.services
    replay = await to_thread.run_sync(
        idempotency.claim, services.engine, SealedText(services.audit), member_id, key, digest
    )
    if replay is not None:
        raise Replayed(replay)
    request.scope[_SCOPE_KEY] = _Claim(member_id, key)


class IdempotencyMiddleware:
    """Settles a claimed key by the status of its answer (2xx: stored, 4xx: released, else:
    failed), holding the answer back until that is committed. Pure ASGI; other requests pass
    straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in MUTATING:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if _SCOPE_KEY not in scope:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await _settle(scope, held)
                for kept in held:
                    await send(kept)

        try:
            await self.app(scope, receive, hold)
        except BaseException:
            found = scope.get(_SCOPE_KEY)
            if isinstance(found, _Claim) and not held:
                engine = scope["app"].state.services.engine
                await to_thread.run_sync(idempotency.fail, engine, found.member_id, found.key, 500)
            raise


async def _settle(scope: Scope, held: list[Message]) -> None:
    found = scope[_SCOPE_KEY]
    assert isinstance(found, _Claim)
    start = held[0]
    status = int(start["status"])
    services = scope["app"].state.services
    engine = services.engine
    if 200 <= status < 300:
        body = b"".join(m.get("body", b"") for m in held[1:])
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in start.get("headers", [])
            if k.lower() not in _NOT_REPLAYED
        }
        await to_thread.run_sync(
            idempotency.complete,
            engine,
            SealedText(services.audit),
            found.member_id,
            found.key,
            status,
            body.decode("utf-8"),
            headers,
        )
    elif 400 <= status < 500:
        await to_thread.run_sync(idempotency.release, engine, found.member_id, found.key)
    else:
        await to_thread.run_sync(idempotency.fail, engine, found.member_id, found.key, status)


def install(app: FastAPI) -> None:
    """Answer retries with their stored answers; settle claims (innermost middleware)."""

    @app.exception_handler(Replayed)
    async def replayed(request: Request, exc: Replayed) -> Response:
        return Response(
            exc.replay.body,
            status_code=exc.replay.status,
            headers={**exc.replay.headers, "idempotent-replayed": "true"},
        )

    app.add_middleware(IdempotencyMiddleware)
