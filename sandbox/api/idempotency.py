"""The ``Idempotency-Key`` header of mutating routes other than queries (sandbox.idempotency).

A route takes ``key: IdempotencyKey = None`` and wraps its call in :func:`once`: without a key
the call simply runs; with one, the first success is stored and every retry with the same key
and the same request (method, path, parsed body) gets that response again — same status, same
body — without running the call; the same key with another request is ``409
idempotency_key_reused``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar, cast

from fastapi import Header, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from sandbox import idempotency
from sandbox.access.model import Member
from sandbox.api.deps import Services

__all__ = ["IdempotencyKey", "once"]

T = TypeVar("T")

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=idempotency.MAX_KEY_CHARS,
        description="Retry safely: the same key and request replays the first response.",
    ),
]


def once(
    services: Services,
    member: Member,
    key: str | None,
    request: Request,
    response: Response,
    body: BaseModel | None,
    call: Callable[[], T],
) -> T:
    """Run ``call`` at most once per (member, key): replay its stored response otherwise."""
    if key is None:
        return call()
    digest = idempotency.request_hash(
        request.method, request.url.path, None if body is None else body.model_dump(mode="json")
    )
    engine = services.engine
    replay = idempotency.claim(engine, member.id, key, digest)
    if replay is not None:
        response.status_code = replay.status
        return cast(T, replay.body)
    try:
        result = jsonable_encoder(call())
    except BaseException:
        idempotency.release(engine, member.id, key)
        raise
    route = request.scope.get("route")
    status = response.status_code or getattr(route, "status_code", None) or 200
    idempotency.complete(engine, member.id, key, int(status), result)
    return cast(T, result)
