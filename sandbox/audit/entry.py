"""What an audit entry is: the event a service records, and the canonical JSON body the chain
hashes (the format is in ``docs/audit.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sandbox.canonical import MAX_SAFE_INTEGER
from sandbox.errors import NotCanonicalizable

FORMAT: Final = 1
GENESIS: Final = "0" * 64  # ``prev`` of the first entry


@dataclass(frozen=True)
class Event:
    """One thing to record. ``refs`` holds ids and small public values (strings, integers,
    booleans — never floats: amounts are micro-units); ``sealed`` the sensitive members, which
    are encrypted. ``primary``: this entry is *the* record of the request being served (it
    takes the request's annotations, see :func:`annotate`, and spares the middleware its
    entry); a side effect of a request (a refresh credit, a settlement) is not."""

    kind: str  # request | query | verification | admin | onboarding | audit
    action: str  # e.g. query.charge, tenant.create, http
    code: str = "ok"
    status: int | None = None
    tenant: str | None = None  # the tenant the entry concerns (default: the actor's)
    refs: Mapping[str, Any] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None
    sealed: Mapping[str, Any] | None = None
    primary: bool = True


def canonical_body(body: Mapping[str, Any]) -> bytes:
    """The canonical JSON of an entry body, fast: :func:`sandbox.canonical.canonical_json`'s
    bytes exactly, for the values an entry may hold, which are checked first (no floats, no
    integer beyond ±(2**53 − 1), ASCII member names — so that sorting by code point is sorting
    by UTF-16 unit). ``json.dumps`` escapes what RFC 8785 escapes and nothing else."""
    _check_plain(body, 0)
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _check_plain(value: object, depth: int) -> None:
    if depth > 32:
        raise NotCanonicalizable("nested too deeply")
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integers must lie within ±(2**53 − 1)")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str) or not name.isascii():
                raise NotCanonicalizable("member names are ASCII strings")
            _check_plain(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, depth + 1)
    else:
        raise NotCanonicalizable(f"no canonical JSON form for {type(value).__name__}")


def format_at(at: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2026-03-01T08:30:00.123456Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
