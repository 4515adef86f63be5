"""Reading verification rows back from the state store, the same way in every module.

Two quirks of the state store that the consent, decision and receipt modules all meet: SQLite
hands stored times back naive (every stored time is UTC), and a statement takes a bounded number
of parameters, so long id lists go into ``IN (...)`` in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

__all__ = ["IN_CHUNK", "chunks", "iso", "utc"]

IN_CHUNK: Final = 900  # bound parameters per IN (...) list (SQLite allows 32766)


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """A stored time as the API writes it: RFC 3339 in UTC, with ``Z``."""
    return utc(moment).isoformat().replace("+00:00", "Z")


def chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    """``items`` in slices of at most :data:`IN_CHUNK`, one ``IN (...)`` list each."""
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
