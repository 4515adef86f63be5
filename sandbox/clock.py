"""The one clock: every time Veil keeps, compares or sends is timezone-aware UTC.

- :func:`now` is the only way the runtime reads the time of day.
- :func:`utc` turns a stored time back into aware UTC: SQLite hands back naive datetimes (every
  stored time is UTC), PostgreSQL aware ones in the session's zone.
- :func:`wire` is how a time leaves Veil: RFC 3339 in UTC with ``Z``
  (``2026-03-01T08:30:00.123456Z``; no fraction when it is zero), as pydantic writes an aware
  UTC datetime — so a service may hand either a datetime or this string to a response model.

Signed documents keep their own fixed formats (receipts: whole seconds; audit entries: always
microseconds), defined where they are signed.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def wire(moment: datetime) -> str:
    """``moment`` in RFC 3339, UTC, with ``Z``."""
    return utc(moment).isoformat().replace("+00:00", "Z")
