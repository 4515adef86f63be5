"""``Idempotency-Key``: the one mechanism every mutating call uses, DP queries included.

One row per (member, key) holds the hash of the request the key was first used for and, once
that request was answered, its status and response. The HTTP layer applies it to every mutating
route (:mod:`sandbox.api.idempotency`); no route or service handles a key itself.

The protocol, so that one key never has two effects:

1. :func:`claim` before the effect. It inserts the key as ``pending`` (``(member_id, key)`` is
   the primary key, so of two concurrent claims one fails), or finds it: a key used for another
   request raises ``idempotency_key_reused``; an answered one returns its :class:`Replay`; a
   pending or failed one raises ``409 conflict`` with its ``state``.
2. The effect.
3. By how the call ended:

   - answered (2xx): :func:`complete` stores the response, replayed to every retry;
   - refused (4xx): :func:`release` drops the claim. A refusal changes nothing (a query's charge
     is reserved only once it passed every check), so the key may be used again;
   - failed (5xx, or the process died): the outcome is uncertain — a query's charge stays spent —
     so :func:`fail` keeps the key, ``failed``: retries answer ``409 conflict`` and never repeat
     the effect. A process that dies before step 3 leaves the key ``pending``, to the same effect.
     The caller checks what happened, then uses a new key.

A stored response is sealed, bound to its (member, key) row (:mod:`sandbox.vault.text`): it may
hold verification outcomes, receipts, query answers or what a caller wrote.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from sandbox import jsonbody
from sandbox.clock import now
from sandbox.errors import Conflict, IdempotencyKeyReused, VeilError
from sandbox.store.db import snapshot
from sandbox.store.schema import MAX_IDEMPOTENCY_KEY_CHARS, idempotent_requests
from sandbox.vault.text import REPLAYED_ANSWERS, SealedText

__all__ = [
    "MAX_KEY_CHARS",
    "KeyState",
    "Replay",
    "claim",
    "complete",
    "fail",
    "release",
    "request_hash",
]

MAX_KEY_CHARS: Final = MAX_IDEMPOTENCY_KEY_CHARS


class KeyState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Replay:
    """The stored answer to the request a key was first used for."""

    status: int
    body: str
    headers: dict[str, str]  # lower-case names


def request_hash(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the request: the same call with the same body has the same hash. A JSON body
    counts by its canonical form, whatever its key order or spacing; any other body (one that the
    strict reader, :mod:`sandbox.jsonbody`, refuses included) by its bytes."""
    try:
        content: Any = jsonbody.loads(body) if body else None
    except (ValueError, VeilError):
        content = {"bytes": hashlib.sha256(body).hexdigest()}
    canonical = json.dumps(
        {"method": method.upper(), "path": path, "body": content},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _where(member_id: str, key: str) -> Any:
    return (idempotent_requests.c.member_id == member_id) & (idempotent_requests.c.key == key)


def claim(
    engine: Engine, texts: SealedText, member_id: str, key: str, digest: str
) -> Replay | None:
    """Claim ``key`` for the request with hash ``digest``: ``None`` to go ahead (then
    :func:`complete`, :func:`release` or :func:`fail`), or the first answer to replay (its
    response opened by ``texts``)."""
    row = None
    try:
        with engine.begin() as con:
            row = con.execute(select(idempotent_requests).where(_where(member_id, key))).first()
            if row is None:
                con.execute(
                    idempotent_requests.insert().values(
                        member_id=member_id,
                        key=key,
                        request_hash=digest,
                        state=KeyState.PENDING.value,
                        created_at=now(),
                    )
                )
                return None
    except IntegrityError:  # a concurrent request claimed the key first
        with engine.connect() as con:
            row = con.execute(select(idempotent_requests).where(_where(member_id, key))).first()
        if row is None:  # … and released it again: one more try would race again
            raise Conflict("a request with this Idempotency-Key is in progress; retry") from None
    if row.request_hash != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key"
        )
    if row.state == KeyState.DONE.value and row.response is not None:
        with engine.connect() as con:  # reads only: no write lock on SQLite
            body = texts.open(
                snapshot(con), REPLAYED_ANSWERS, "response", (member_id, key), row.response
            )
        return Replay(int(row.status), str(body), json.loads(row.headers or "{}"))
    raise Conflict(
        "a request with this Idempotency-Key is in progress, or failed; check its outcome, "
        "then use a new key",
        state=row.state,
    )


def complete(
    engine: Engine,
    texts: SealedText,
    member_id: str,
    key: str,
    status: int,
    body: str,
    headers: dict[str, str],
) -> None:
    """Store the answer of a claimed key: its status, body (sealed by ``texts``) and the
    headers it was sent with."""
    with engine.begin() as con:
        con.execute(
            update(idempotent_requests)
            .where(_where(member_id, key), idempotent_requests.c.state == KeyState.PENDING.value)
            .values(
                state=KeyState.DONE.value,
                status=status,
                response=texts.seal(con, REPLAYED_ANSWERS, "response", (member_id, key), body),
                headers=json.dumps(headers, sort_keys=True, separators=(",", ":")),
                completed_at=now(),
            )
        )


def fail(engine: Engine, member_id: str, key: str, status: int) -> None:
    """Keep a claimed key whose call failed with an uncertain outcome: never run it again."""
    with engine.begin() as con:
        con.execute(
            update(idempotent_requests)
            .where(_where(member_id, key), idempotent_requests.c.state == KeyState.PENDING.value)
            .values(state=KeyState.FAILED.value, status=status, completed_at=now())
        )


def release(engine: Engine, member_id: str, key: str) -> None:
    """Drop a pending claim whose call was refused (it had no effect)."""
    with engine.begin() as con:
        con.execute(
            delete(idempotent_requests).where(
                _where(member_id, key), idempotent_requests.c.state == KeyState.PENDING.value
            )
        )
