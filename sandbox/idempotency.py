"""``Idempotency-Key`` for mutating calls whose effect is not a ledger charge (onboarding).

DP queries keep their keys on the charge itself (``sandbox.ledger``, docs/ledger.md). Every other
mutating call that accepts the header keeps them here: one row per (member, key) with the hash
of the request it was first used for and, once that request succeeded, its status and response.

The protocol, so that one key never has two effects:

1. :func:`claim` before the effect. It inserts the key as ``pending`` (``(member_id, key)`` is
   the primary key, so of two concurrent claims one fails), or finds it: a key used for another
   request raises ``idempotency_key_reused``; a completed one returns its :class:`Replay`; a
   pending one raises ``409 conflict`` (``state: pending``).
2. The effect.
3. :func:`complete` stores the response; or, if the call raised, :func:`release` drops the claim:
   a call that fails changes nothing, so the key may be used again.

A process that dies between the effect and :func:`complete` leaves the key ``pending``: retries
answer ``409 conflict`` and never repeat the effect (the caller checks the state and uses a new
key), as for a query charge left ``reserved``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    Engine,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from sandbox.clock import now
from sandbox.errors import Conflict, IdempotencyKeyReused
from sandbox.store.schema import MAX_IDEMPOTENCY_KEY_CHARS, idempotent_requests

__all__ = [
    "MAX_KEY_CHARS",
    "KeyState",
    "Replay",
    "claim",
    "complete",
    "idempotent_requests",
    "release",
    "request_hash",
]

MAX_KEY_CHARS: Final = MAX_IDEMPOTENCY_KEY_CHARS


class KeyState(StrEnum):
    PENDING = "pending"
    DONE = "done"


@dataclass(frozen=True)
class Replay:
    """The stored response of the request a key was first used for."""

    status: int
    body: Any


def request_hash(method: str, path: str, body: Mapping[str, Any] | None) -> str:
    """SHA-256 of the request in canonical JSON: the same call with the same (parsed) body has
    the same hash whatever its key order or spacing."""
    canonical = json.dumps(
        {"method": method.upper(), "path": path, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _where(member_id: str, key: str) -> Any:
    return (idempotent_requests.c.member_id == member_id) & (idempotent_requests.c.key == key)


def claim(engine: Engine, member_id: str, key: str, digest: str) -> Replay | None:
    """Claim ``key`` for the request with hash ``digest``: ``None`` to go ahead (then
    :func:`complete` or :func:`release`), or the first response to replay."""
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
        return Replay(int(row.status), json.loads(row.response))
    raise Conflict(
        "a request with this Idempotency-Key is in progress or was interrupted; check its "
        "outcome, then use a new key",
        state=row.state,
    )


def complete(engine: Engine, member_id: str, key: str, status: int, body: Any) -> None:
    """Store the response of a claimed key (``body`` must be JSON-ready)."""
    with engine.begin() as con:
        con.execute(
            update(idempotent_requests)
            .where(_where(member_id, key), idempotent_requests.c.state == KeyState.PENDING.value)
            .values(
                state=KeyState.DONE.value,
                status=status,
                response=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                completed_at=now(),
            )
        )


def release(engine: Engine, member_id: str, key: str) -> None:
    """Drop a pending claim whose request failed (it had no effect)."""
    with engine.begin() as con:
        con.execute(
            delete(idempotent_requests).where(
                _where(member_id, key), idempotent_requests.c.state == KeyState.PENDING.value
            )
        )
