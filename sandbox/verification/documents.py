"""Receipt documents: building the receipts of answered lines and collecting their signatures.

This module owns the step between the outcome and the answer transaction: every answered line
gets its receipt document — the stored one for the tenant's own repeat, else a new one with the
zone's current key id — and the text to sign, sent in chunks to the signer pool
(:mod:`sandbox.verification.signer`) so that a large batch is signed while the answer
transaction writes its events; :meth:`ReceiptDocuments.collect` puts the signatures in. It also
turns a signed document into its ``receipts`` row. The receipt format itself, and the strict
check a document is built through once per call, are :mod:`sandbox.verification.receipts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.access.model import Member
from sandbox.canonical import b64url_encode
from sandbox.keys.signing import SigningKeys
from sandbox.verification.lines import Line
from sandbox.verification.receipts import Receipt, format_time
from sandbox.verification.signer import CHUNK, Signer

__all__ = ["ReceiptDocuments", "SignJob", "receipt_row"]

log = logging.getLogger("veil.verification")

_RFC3339: Final = "%Y-%m-%dT%H:%M:%S%z"
# One encoder, built once (json.dumps with options builds a new encoder on every call).
_SIGNING_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

# Receipt documents sent to be signed: (line, document, signing input), the signatures, and the
# key that signs them (the one whose id the documents name).
SignJob = tuple[list[tuple[Line, dict[str, object], str]], Future[list[bytes]], Ed25519PrivateKey]


class ReceiptDocuments:
    """The receipts of answered lines, signed with the zone's current key (by ``signer``'s
    processes for large batches, here when the pool fails). ``keys`` is the receipt ring as it
    is now: each call of :meth:`make` signs with the key that is current when it starts."""

    def __init__(self, keys: SigningKeys, signer: Signer) -> None:
        self.keys = keys
        self.signer = signer

    def make(
        self,
        member: Member,
        lines: list[Line],
        at: datetime,
        stored: Mapping[str, dict[str, object]],
    ) -> list[SignJob]:
        """Give every answered line its receipt: the stored one for the tenant's own repeat (or
        the one made for an earlier line of this call), else a new document, sent to be signed
        (in chunks, by the signer pool for large batches); :meth:`collect` collects the
        signatures. A line whose signed document still has its receipt id and outcome keeps
        it: the answer transaction calls this again after a changed decision, and re-signs
        only what changed."""
        issued_at = format_time(at.replace(microsecond=0))
        ring = self.keys.ring()  # once: the key id the documents name is the key that signs
        key, key_id = ring.current, ring.current_id
        made: dict[str, dict[str, object]] = {}  # receipt id -> document made in this call
        chunk: list[tuple[Line, dict[str, object], str]] = []
        jobs: list[SignJob] = []
        first = True
        for line in lines:
            if not line.ok or line.failed is not None or line.receipt_id is None:
                line.document = line.signed = None
                continue
            earlier = stored.get(line.receipt_id) or made.get(line.receipt_id)
            if line.stored and earlier is not None:  # asked before, or earlier in this call
                line.document, line.signed = earlier, None  # (a new one is signed below)
                line.outcome = str(earlier["outcome"])
                continue
            kept = line.document
            if (
                line.signed is not None
                and kept is not None
                and kept["receipt_id"] == line.receipt_id
                and kept["outcome"] == line.outcome
            ):
                made[line.receipt_id] = kept
                continue
            document, message = self._document(line, member, issued_at, key_id, checked=first)
            first = False
            line.document = made[line.receipt_id] = document
            line.signed = None
            chunk.append((line, document, message))
            if len(chunk) >= CHUNK:
                jobs.append(
                    (chunk, self.signer.submit([m.encode() for _, _, m in chunk], key), key)
                )
                chunk = []
        if chunk:
            jobs.append((chunk, self.signer.submit([m.encode() for _, _, m in chunk], key), key))
        return jobs

    def collect(self, jobs: list[SignJob]) -> None:
        """Wait for the signatures of :meth:`make`'s jobs and put them in the documents."""
        for job, future, key in jobs:
            try:
                signatures = future.result()
            except Exception as exc:  # a broken pool: sign here
                log.warning("signer pool failed (%s); signing in the server", type(exc).__name__)
                self.signer.failed()
                signatures = [key.sign(m.encode()) for _, _, m in job]
            for (line, document, message), raw in zip(job, signatures, strict=True):
                signature = b64url_encode(raw)
                document["signature"] = signature
                line.signed = f'{message[:-1]},"signature":"{signature}"}}'

    def _document(
        self, line: Line, member: Member, issued_at: str, key_id: str, checked: bool
    ) -> tuple[dict[str, object], str]:
        """The receipt document (without its signature) and the text to sign.

        Every member comes from a validated source (ids Veil generated, the template, the
        checked request), so the document is built directly; with ``checked`` it is first
        built through :class:`Receipt`, whose strict validation then vouches for the shape of
        the whole batch (done once per call: the dataclass costs more than the signature)."""
        template, version, consent, request = (
            line.template,
            line.version,
            line.consent,
            line.request,
        )
        assert template is not None and version is not None and consent is not None
        assert request is not None and line.receipt_id is not None and line.outcome is not None
        document: dict[str, object] = {
            "receipt_id": line.receipt_id,
            "template_id": template.id,
            "template_version": template.version,
            "subject_ref": line.subject_ref,
            "tenant_id": member.tenant_id,
            "purpose": request.purpose,
            "consent_id": consent.id,
            "claim_commitment": line.commitment,
            "outcome": line.outcome,
            "dataset": version.dataset,
            "dataset_version": str(version.version),
            "issued_at": issued_at,
            "key_id": key_id,
        }
        if checked:
            values = {**document, "issued_at": datetime.strptime(issued_at, _RFC3339)}
            receipt = Receipt(**values)  # type: ignore[arg-type]
            if receipt.fields() != document:
                raise ValueError("a receipt member is not in canonical form")
        # A receipt is a flat object with ASCII member names, strings, integers and nulls:
        # sorted-key compact JSON is exactly its RFC 8785 form (receipts.signing_input), at a
        # fraction of the cost. Tests check that issued receipts verify strictly.
        message = _SIGNING_JSON.encode(document)
        return document, message


def receipt_row(member: Member, line: Line, issued: datetime) -> dict[str, Any]:
    """The ``receipts`` row of a line's new receipt (its document, signed, as stored)."""
    document = line.document
    assert document is not None and line.signed is not None
    return {
        "id": line.receipt_id,
        "tenant_id": member.tenant_id,
        "subject_ref": line.subject_ref,
        "template_id": document["template_id"],
        "template_version": document["template_version"],
        "consent_id": document["consent_id"],
        "outcome": line.outcome,
        "issued_at": issued,
        "document": line.signed,
        "status": "valid",
    }
