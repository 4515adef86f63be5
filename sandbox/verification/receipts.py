"""Verification receipts: canonical JSON, Ed25519 signatures, key ids, commitments.

A receipt is the signed record of one verification outcome. It names the template version, a
salted reference to the subject, the tenant, purpose and consent, a *commitment* to the claim
(never the claimed value), the outcome and the dataset version, and it can be checked offline by
anyone holding the zone's published public keys (``GET /v1/keys``).

The signed message is the canonical JSON (RFC 8785, JCS) of the receipt's fields, i.e. the
document without its ``signature`` member, as UTF-8 bytes. Receipts carry no floating-point
numbers, so the subset implemented here — strings, integers of magnitude below 2**53, booleans,
null, objects and arrays — is exactly JCS for every value they can hold. The offline algorithm is
written out step by step in ``docs/verification.md``.

Key id: the first 16 hex digits of SHA-256 over the 32-byte raw Ed25519 public key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from policies.errors import InvalidRequest
from sandbox.canonical import b64url_decode, b64url_encode, canonical_json
from sandbox.errors import BadSignature, MalformedReceipt, UnknownKey
from sandbox.keys.signing import key_id

MIN_SALT_BYTES: Final = 16
"""Commitments hide low-entropy claims (a revenue figure) only with a long random salt."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_MAX_TEXT = 256


def subject_ref(subject_id: str, zone_secret: bytes) -> str:
    """The subject's reference on receipts: hex HMAC-SHA256(zone secret, subject id).

    The message is ``b"veil.subject.v1\\x00" + subject_id`` (UTF-8). Without the zone secret a
    reference cannot be linked to a credit code by trying the (enumerable) codes.
    """
    _check_secret(zone_secret)
    message = b"veil.subject.v1\x00" + subject_id.encode("utf-8")
    return hmac.new(zone_secret, message, hashlib.sha256).hexdigest()


def commit(claim: object, salt: bytes) -> str:
    """The claim commitment: hex SHA-256 of ``salt || canonical_json(claim)``.

    The salt (at least 16 random bytes, :func:`new_salt`) is shared by the subject and the
    tenant through the consent; holding it and the claim, anyone can recompute the commitment
    on a receipt. Without it, the commitment hides even a guessable claim.
    """
    if len(salt) < MIN_SALT_BYTES:
        raise InvalidRequest(f"a commitment salt has at least {MIN_SALT_BYTES} bytes")
    return hashlib.sha256(salt + canonical_json(claim)).hexdigest()


def claim_fingerprint(zone_secret: bytes, attribute: str, claim: object) -> str:
    """A deterministic, zone-keyed identifier of a claim *value* on one attribute: the
    ``claim_commitment`` of the leakage ledger's events (sticky answers, claim-change
    detection), equal for equal claims whatever the consent's salt. Never printed on receipts.

    hex HMAC-SHA256(zone secret, ``b"veil.claim.v1\\x00" + canonical_json([attribute, claim])``).
    """
    _check_secret(zone_secret)
    message = b"veil.claim.v1\x00" + canonical_json([attribute, claim])
    return hmac.new(zone_secret, message, hashlib.sha256).hexdigest()


def new_salt() -> bytes:
    return secrets.token_bytes(MIN_SALT_BYTES)


def new_receipt_id() -> str:
    return "rcpt_" + secrets.token_hex(16)


def _check_secret(secret: bytes) -> None:
    if len(secret) < 32:
        raise ValueError("a zone secret has at least 32 bytes")


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with whole seconds: ``2026-03-01T08:30:00Z``."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    if not _TIME.match(text):
        raise ValueError("not RFC 3339 UTC seconds")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Receipt:
    """The signed fields of a receipt. ``issued_at`` is kept in UTC with whole seconds."""

    receipt_id: str
    template_id: str
    template_version: int
    subject_ref: str  # subject_ref(): 64 hex
    tenant_id: str
    purpose: str
    consent_id: str
    claim_commitment: str | None  # commit(): 64 hex; None for templates without a claim
    outcome: str
    dataset: str
    dataset_version: str
    issued_at: datetime
    key_id: str

    _TEXT: ClassVar[tuple[str, ...]] = (
        "receipt_id",
        "template_id",
        "tenant_id",
        "purpose",
        "consent_id",
        "outcome",
        "dataset",
        "dataset_version",
    )

    def __post_init__(self) -> None:
        for name in self._TEXT:
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
                raise ValueError(f"{name}: a non-empty string of at most {_MAX_TEXT} characters")
            if any(ord(c) < 0x20 or c == "\x7f" for c in value):
                raise ValueError(f"{name}: no control characters")
        version = self.template_version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError("template_version: a positive integer")
        if not isinstance(self.subject_ref, str) or not _HEX64.match(self.subject_ref):
            raise ValueError("subject_ref: 64 lowercase hex digits")
        commitment = self.claim_commitment
        if commitment is not None and (
            not isinstance(commitment, str) or not _HEX64.match(commitment)
        ):
            raise ValueError("claim_commitment: 64 lowercase hex digits or None")
        if not isinstance(self.key_id, str) or not _KEY_ID.match(self.key_id):
            raise ValueError("key_id: 16 lowercase hex digits")
        if not isinstance(self.issued_at, datetime):
            raise ValueError("issued_at: a datetime")
        normalised = _parse_time(format_time(self.issued_at))
        object.__setattr__(self, "issued_at", normalised)

    def fields(self) -> dict[str, object]:
        """The signed members, JSON-ready (``issued_at`` as RFC 3339)."""
        doc: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["issued_at"] = format_time(self.issued_at)
        return doc


RECEIPT_FIELDS: Final = tuple(f.name for f in fields(Receipt))


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A signed receipt document as a result: :data:`RECEIPT_FIELDS` and ``signature``, every
    member exactly as it was signed (``issued_at`` in the receipt's own format, whole seconds).
    Built from documents Veil signed or stored (:meth:`of`); :func:`verify` checks a document
    from elsewhere."""

    receipt_id: str
    template_id: str
    template_version: int
    subject_ref: str
    tenant_id: str
    purpose: str
    consent_id: str
    claim_commitment: str | None
    outcome: str
    dataset: str
    dataset_version: str
    issued_at: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> SignedReceipt:
        """The receipt in a signed document Veil made or stored (its members, exactly)."""
        return cls(**document)

    def document(self) -> dict[str, object]:
        """The signed document: what :func:`verify` checks."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def signing_input(document: Mapping[str, object]) -> bytes:
    """The bytes the signature covers: canonical JSON of every member except ``signature``."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def sign(receipt: Receipt, private_key: Ed25519PrivateKey) -> dict[str, object]:
    """The receipt document: its fields plus ``signature`` (base64url of the Ed25519 signature
    over :func:`signing_input`)."""
    if receipt.key_id != key_id(private_key):
        raise ValueError("the receipt's key_id is not the signing key's id")
    document = receipt.fields()
    document["signature"] = b64url_encode(private_key.sign(signing_input(document)))
    return document


def parse_receipt(document: Mapping[str, Any]) -> Receipt:
    """The :class:`Receipt` in a document (signature not checked). Raises
    :class:`MalformedReceipt` unless the members are exactly the receipt fields and
    ``signature``, with the right types."""
    if not isinstance(document, Mapping):
        raise MalformedReceipt("a receipt is a JSON object")
    if set(document) != {*RECEIPT_FIELDS, "signature"}:
        raise MalformedReceipt("a receipt has exactly the documented members")
    if not isinstance(document["issued_at"], str):
        raise MalformedReceipt("bad member: issued_at")
    try:
        values = {name: document[name] for name in RECEIPT_FIELDS}
        values["issued_at"] = _parse_time(document["issued_at"])
        receipt = Receipt(**values)
    except (TypeError, ValueError) as exc:
        member = str(exc).split(":", 1)[0] if ":" in str(exc) else "issued_at"
        raise MalformedReceipt(f"bad member: {member}") from None
    if receipt.fields() != {k: document[k] for k in RECEIPT_FIELDS}:
        raise MalformedReceipt("a member is not in canonical form")
    return receipt


def verify(document: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Check a receipt document offline. Returns ``True`` or raises :class:`ReceiptError`:
    ``receipt_malformed``, ``receipt_unknown_key`` or ``receipt_bad_signature``."""
    receipt = parse_receipt(document)
    signature_text = document["signature"]
    if not isinstance(signature_text, str):
        raise MalformedReceipt("bad member: signature")
    try:
        signature = b64url_decode(signature_text)
    except ValueError:
        raise MalformedReceipt("bad member: signature") from None
    if len(signature) != 64:
        raise MalformedReceipt("bad member: signature")
    public = public_keys.get(receipt.key_id)
    if public is None or key_id(public) != receipt.key_id:
        raise UnknownKey("the receipt's key_id is not a published key")
    try:
        public.verify(signature, signing_input(document))
    except InvalidSignature:
        raise BadSignature("the signature does not match the receipt") from None
    return True
