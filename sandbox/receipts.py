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

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from policies.errors import InvalidRequest
from sandbox.errors import BadSignature, MalformedReceipt, NotCanonicalizable, UnknownKey
from sandbox.masterkey import check_private, write_private

__all__ = [
    "MIN_SALT_BYTES",
    "RECEIPT_FIELDS",
    "KeyRing",
    "Receipt",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "claim_fingerprint",
    "commit",
    "format_time",
    "generate_key",
    "key_id",
    "load_key_ring",
    "load_private_key",
    "load_public_key",
    "new_receipt_id",
    "new_salt",
    "parse_receipt",
    "public_key_document",
    "public_keys_from_document",
    "rotate_key_ring",
    "save_private_key",
    "save_public_key",
    "sign",
    "signing_input",
    "subject_ref",
    "verify",
]

MIN_SALT_BYTES: Final = 16
"""Commitments hide low-entropy claims (a revenue figure) only with a long random salt."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_MAX_TEXT = 256

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------












# ---------------------------------------------------------------------------------------------
# Canonical JSON (RFC 8785 subset: no floats)
# ---------------------------------------------------------------------------------------------


def canonical_json(value: object) -> bytes:
    """RFC 8785 canonical JSON of ``value`` as UTF-8 bytes.

    Objects' members are sorted by the UTF-16 code units of their names; no whitespace; strings
    escape only ``"``, ``\\`` and control characters (``\\b \\f \\n \\r \\t``, others as
    ``\\u00xx``); integers in decimal. Floats, integers beyond ±(2**53 − 1), non-string keys
    and strings that are not valid Unicode are refused with :class:`NotCanonicalizable`.
    """
    parts: list[str] = []
    _emit(value, parts, depth=0)
    return "".join(parts).encode("utf-8")


def _emit(value: object, out: list[str], depth: int) -> None:
    if depth > 64:
        raise NotCanonicalizable("nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integers must lie within ±(2**53 − 1)")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        names = list(value)
        if not all(isinstance(k, str) for k in names):
            raise NotCanonicalizable("object member names must be strings")
        out.append("{")
        for i, name in enumerate(sorted(names, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_string(name))
            out.append(":")
            _emit(value[name], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out, depth + 1)
        out.append("]")
    else:
        raise NotCanonicalizable(f"no canonical JSON form for {type(value).__name__}")


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotCanonicalizable("strings must be valid Unicode (no lone surrogates)") from None
    # json.dumps with ensure_ascii=False escapes exactly what RFC 8785 (ECMAScript) escapes:
    # '"', '\\', \b \f \n \r \t and other C0 controls as lowercase \u00xx; nothing else.
    return json.dumps(text, ensure_ascii=False)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# base64url (RFC 4648 §5, no padding), strict
# ---------------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict: the URL-safe alphabet only, no padding, no non-zero trailing bits."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


# ---------------------------------------------------------------------------------------------
# Hashes: subject references, claim commitments, claim fingerprints
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------


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


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


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


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, atomically (replaces ``path``)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def save_public_key(path: Path, key: Ed25519PublicKey) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


@dataclass(frozen=True)
class KeyRing:
    """The current receipt signing key and the retired public keys that stay published."""

    current: Ed25519PrivateKey
    retired: tuple[Ed25519PublicKey, ...] = ()

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """key id -> public key, current and retired: what :func:`verify` needs."""
        keys = {key_id(k): k for k in self.retired}
        keys[self.current_id] = self.current.public_key()
        return keys

    def sign(self, receipt: Receipt) -> dict[str, object]:
        return sign(receipt, self.current)


CURRENT_KEY_FILE: Final = "receipt-signing.pem"
RETIRED_DIR: Final = "receipt-retired"


def load_key_ring(directory: Path, *, create: bool = False, name: str = "receipt") -> KeyRing:
    """Read ``<directory>/<name>-signing.pem`` (the current private key, which must not be
    accessible to group or others) and ``<directory>/<name>-retired/*.pem`` (retired public
    keys). With ``create``, a missing current key is generated and saved (mode 0600). ``name``
    keeps rings apart: ``receipt`` signs receipts, ``audit`` the audit log's checkpoints."""
    current_path = directory / f"{name}-signing.pem"
    if not current_path.exists():
        if not create:
            raise FileNotFoundError(f"no {name} signing key at {current_path}")
        save_private_key(current_path, generate_key())
    check_private(current_path)
    current = load_private_key(current_path)
    retired_dir = directory / f"{name}-retired"
    retired = tuple(load_public_key(p) for p in sorted(retired_dir.glob("*.pem")))
    current_id = key_id(current)
    return KeyRing(current, tuple(k for k in retired if key_id(k) != current_id))


def rotate_key_ring(directory: Path, name: str = "receipt") -> KeyRing:
    """Retire the current key (its public half stays published) and start a new one."""
    ring = load_key_ring(directory, name=name)
    old = ring.current.public_key()
    save_public_key(directory / f"{name}-retired" / f"{key_id(old)}.pem", old)
    save_private_key(directory / f"{name}-signing.pem", generate_key())
    return load_key_ring(directory, name=name)


def public_key_document(keys: KeyRing) -> dict[str, object]:
    """The body of ``GET /v1/keys``: every key that may have signed a live receipt."""
    entries: list[dict[str, object]] = [
        _key_entry(keys.current.public_key(), "current"),
        *(_key_entry(k, "retired") for k in keys.retired),
    ]
    return {"keys": entries}


def _key_entry(public: Ed25519PublicKey, status: str) -> dict[str, object]:
    return {
        "key_id": key_id(public),
        "algorithm": "Ed25519",
        "public_key": b64url_encode(_raw(public)),
        "status": status,
    }


def public_keys_from_document(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Parse a ``GET /v1/keys`` body (checking each key id) into what :func:`verify` needs."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise MalformedReceipt("a key document has a 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or entry.get("algorithm") != "Ed25519":
            raise MalformedReceipt("each key is an Ed25519 entry")
        try:
            raw = b64url_decode(str(entry.get("public_key", "")))
            public = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise MalformedReceipt("a public key is not 32 bytes of base64url") from None
        if entry.get("key_id") != key_id(public):
            raise MalformedReceipt("a key id does not match its key")
        keys[key_id(public)] = public
    return keys
