"""The checks of one stored entry against its predecessor: what ``verify`` runs over the whole
log and what the checkpoint writer runs over the entries since the last checkpoint before it
signs (``docs/audit.md``, Verification).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.audit.entry import canonical_body, format_at
from sandbox.canonical import canonical_json
from sandbox.clock import utc
from sandbox.errors import NotCanonicalizable
from sandbox.keys.audit import HmacRing

__all__ = ["COLUMNS", "EntryRow", "Problem", "canonical_entry", "check_entry"]

# The stored columns that readers filter on or show, each repeating a member of the body:
# ``tenant_id`` is ``tenant``, ``member_id`` is ``actor.member``, the others have their names.
COLUMNS: tuple[str, ...] = ("at", "kind", "action", "status", "code", "tenant_id", "member_id")
_SAME_NAME: tuple[str, ...] = ("kind", "action", "status", "code")


@dataclass(frozen=True)
class EntryRow:
    """One stored entry. ``columns``: the filter columns as stored (``None``: not compared)."""

    seq: int
    body: str
    hash: str
    mac: str | None
    columns: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Problem:
    where: str  # entry | checkpoint | head | witness
    ref: int  # entry seq, checkpoint id, or the witnessed checkpoint's number
    code: str
    detail: str

    def line(self) -> str:
        return f"{self.where} {self.ref}: {self.code}: {self.detail}"


def check_entry(row: EntryRow, prev: str, hmac_ring: HmacRing | None) -> Iterator[Problem]:
    """What is wrong with ``row`` given the hash of the entry before it (``prev``): its hash,
    form, position, link, MAC (when ``hmac_ring`` is given) and stored columns."""

    def problem(code: str, detail: str) -> Problem:
        return Problem("entry", row.seq, code, detail)

    raw = row.body.encode("utf-8")
    digest = hashlib.sha256(raw)
    if digest.hexdigest() != row.hash:
        yield problem("entry_hash_mismatch", "the body does not hash to the stored hash (edited)")
    try:
        body = json.loads(row.body)
        canonical = canonical_entry(body) == raw
    except (ValueError, NotCanonicalizable):
        yield problem("entry_malformed", "the body is not JSON")
        return
    if not isinstance(body, dict):
        yield problem("entry_malformed", "the body is not a JSON object")
        return
    if not canonical:
        yield problem("entry_not_canonical", "the body is not canonical JSON")
    if body.get("seq") != row.seq:
        yield problem("entry_seq_mismatch", f"the body says seq {body.get('seq')} (moved)")
    if body.get("prev") != prev:
        yield problem(
            "entry_broken_link",
            "prev is not the previous entry's hash (reordered, deleted or rewritten)",
        )
    if hmac_ring is not None:
        expected = hmac_ring.mac(str(body.get("mac_key")), digest.digest())
        if expected is None:
            yield problem("entry_unknown_mac_key", "the HMAC key it names is not in the ring")
        elif row.mac != expected:
            yield problem("entry_bad_mac", "the MAC does not match (the chain was rebuilt)")
    if row.columns is not None:
        stored = {name: row.columns.get(name) for name in COLUMNS}
        stored["at"] = _at(row.columns.get("at"))
        if stored != _claimed(body):
            yield problem("entry_columns_mismatch", "the filter columns differ from the body")


def _claimed(body: Mapping[str, Any]) -> dict[str, Any]:
    """The columns as the body says they must be stored."""
    claimed = {name: body.get(name) for name in _SAME_NAME}
    actor = body.get("actor")
    claimed["at"] = body.get("at")
    claimed["tenant_id"] = body.get("tenant")
    claimed["member_id"] = actor.get("member") if isinstance(actor, Mapping) else None
    return claimed


def canonical_entry(body: Any) -> bytes:
    """Canonical JSON of a parsed body: the fast form for what the writer produces, the general
    one otherwise (both give the same bytes where both apply)."""
    try:
        return canonical_body(body)
    except NotCanonicalizable:
        return canonical_json(body)


def _at(value: Any) -> str | None:
    return format_at(utc(value)) if isinstance(value, datetime) else None
