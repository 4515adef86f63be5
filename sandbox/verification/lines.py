"""A request line on its way through the answering flow.

A single verification is a call of one line, a batch a call of many; each step of the flow
(:mod:`sandbox.verification.service`) fills in what it decided on the line: the checked shape,
the pinned dataset version and consent (:mod:`~sandbox.verification.decision`), the outcome
(:mod:`~sandbox.verification.outcomes`), the receipt (:mod:`~sandbox.verification.documents`),
or the error that stops it. The line is the one mutable record of the flow, on purpose: a batch
carries tens of thousands of them through every step, and the answer transaction may decide a
line again, so each step updates it in place rather than copying it.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.templates.claims import Claim
from policies.templates.model import Template
from sandbox import catalog
from sandbox.errors import VeilError
from sandbox.verification.consents import Held
from sandbox.verification.requests import VerifyRequest

__all__ = ["Line"]


@dataclass
class Line:
    """One request on its way through the flow."""

    index: int
    request: VerifyRequest | None
    error: VeilError | None = None
    template: Template | None = None
    claim: Claim = None
    subject_ref: str = ""
    commitment: str | None = None  # commit(claim, salt): what the consent must hold
    fingerprint: str | None = None  # zone-keyed claim id for the leakage ledger
    version: catalog.DatasetVersion | None = None
    consent: Held | None = None
    receipt_id: str | None = None
    outcome: str | None = None
    stored: bool = False  # the receipt exists already (an own sticky repeat)
    fresh_id: str | None = None  # the receipt id of a new answer (kept if decided again)
    failed: VeilError | None = None  # allowed, but the query failed: charged, no receipt
    unread: bool = False  # ``failed`` before any data was read: not charged after all
    document: dict[str, object] | None = None
    signed: str | None = None  # a new receipt's stored JSON text (the document, signed)

    @property
    def ok(self) -> bool:
        return self.error is None
