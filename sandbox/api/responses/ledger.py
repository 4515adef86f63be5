"""The ledger for auditors: charges and credits, ids and amounts only; as JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime

from sandbox.api.responses.base import View
from sandbox.ledger import entries


class LedgerEntry(View):
    mirrors = entries.LedgerEntry

    time: datetime
    entry: str
    id: str
    tenant: str
    dataset: str
    grant: str
    member: str | None
    state: str | None
    amount: float
    delta: float
    accounting: str
    query_hash: str | None
    dataset_version: int | None


class Ledger(View):
    entries: list[LedgerEntry]


def ledger(found: Iterable[entries.LedgerEntry]) -> Ledger:
    return Ledger(entries=[LedgerEntry.of(e) for e in found])


def ledger_csv(found: Iterable[entries.LedgerEntry]) -> str:
    """The entries as CSV: one row each, the JSON's members as columns (empty for null)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(LedgerEntry.model_fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(LedgerEntry.of(e).model_dump(mode="json") for e in found)
    return buffer.getvalue()
