"""The ledger for auditors: charges and credits, ids and amounts only."""

from __future__ import annotations

from sandbox.api.responses.base import View


class LedgerEntry(View):
    time: str
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
