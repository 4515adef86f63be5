"""Receipts: canonical JSON, commitments, Ed25519 signatures, key ids, key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.errors import InvalidRequest
from sandbox.canonical import b64url_decode, b64url_encode, canonical_json
from sandbox.errors import BadSignature, MalformedReceipt, NotCanonicalizable, UnknownKey
from sandbox.keys.signing import (
    KeyRing,
    generate_key,
    key_id,
    load_key_ring,
    load_private_key,
    public_key_document,
    public_keys_from_document,
    rotate_key_ring,
    save_private_key,
)
from sandbox.verification.receipts import (
    RECEIPT_FIELDS,
    Receipt,
    claim_fingerprint,
    commit,
    new_salt,
    parse_receipt,
    sign,
    signing_input,
    subject_ref,
    verify,
)

# A fixed key (Ed25519 signatures are deterministic), zone secret, salt and receipt.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ZONE_SECRET = bytes(range(100, 132))
SALT = bytes(range(16))
KEY_ID = "56475aa75463474c"
PUBLIC_B64 = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
SUBJECT_REF = "c512af3115aa40d5c9bdb9c7d69442b14e0ac42c341df12dbbc0393f8fb07e22"
COMMITMENT = "d902dde18f6a8d20d942c739339045ea0208882089568550f3660fdb361b6e22"
CANONICAL = (
    '{"claim_commitment":"' + COMMITMENT + '","consent_id":"cons_42","dataset":"enterprise",'
    '"dataset_version":"2024-12.1","issued_at":"2026-03-01T08:30:00Z","key_id":"' + KEY_ID + '",'
    '"outcome":"match","purpose":"credit_underwriting","receipt_id":"rcpt_0001",'
    '"subject_ref":"' + SUBJECT_REF + '","template_id":"REV_TOLERANCE","template_version":1,'
    '"tenant_id":"bank-a"}'
)
SIGNATURE = "R6uhywczCOgnTP_l-tDyGafQoD2psB6qH66-rrhqfim2rxXCQbDrAmh6xz4M3iCT8jI3KkAuMim7lHfF2kcABw"


def receipt(**changes: Any) -> Receipt:
    values: dict[str, Any] = {
        "receipt_id": "rcpt_0001",
        "template_id": "REV_TOLERANCE",
        "template_version": 1,
        "subject_ref": subject_ref("91110105MA01ABCD2X", ZONE_SECRET),
        "tenant_id": "bank-a",
        "purpose": "credit_underwriting",
        "consent_id": "cons_42",
        "claim_commitment": commit(5_000_000, SALT),
        "outcome": "match",
        "dataset": "enterprise",
        "dataset_version": "2024-12.1",
        "issued_at": datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC),
        "key_id": KEY_ID,
    }
    values.update(changes)
    return Receipt(**values)


def keys() -> dict[str, Any]:
    return {KEY_ID: KEY.public_key()}


# ---------------------------------------------------------------------------------------------
# Canonical JSON
# ---------------------------------------------------------------------------------------------


def test_canonical_json_rfc8785_examples() -> None:
    # RFC 8785 §3.2.2 (without its numbers: receipts carry no floats).
    value = {
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    assert canonical_json(value) == (
        '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'.encode()
    )
    # RFC 8785 §3.2.3: member names sort by UTF-16 code units (the emoji's surrogates sort
    # before U+FB33, unlike code-point order).
    names = {
        "\u20ac": 0,
        "\r": 0,
        "\ufb33": 0,
        "1": 0,
        "\U0001f600": 0,
        "\u0080": 0,
        "\u00f6": 0,
    }
    order = list(json.loads(canonical_json(names)))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_canonical_json_subset() -> None:
    assert canonical_json({"b": [1, -2, 0], "a": {"d": None, "c": "x"}}) == (
        b'{"a":{"c":"x","d":null},"b":[1,-2,0]}'
    )
    assert (
        canonical_json("\u2028\x7f\x00\x1f\t\b\f") == b'"\xe2\x80\xa8\x7f\\u0000\\u001f\\t\\b\\f"'
    )
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    assert canonical_json((1, 2)) == b"[1,2]"
    for bad in (1.5, 2**53, -(2**53), {1: "a"}, "\ud800", b"bytes", {"a": {1, 2}}):
        with pytest.raises(NotCanonicalizable):
            canonical_json(bad)


def test_base64url_is_strict() -> None:
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"
    for bad in ("-_8=", "+/8", "a", "-_9", "ab c"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


# ---------------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------------


def test_fixed_vectors() -> None:
    assert key_id(KEY) == key_id(KEY.public_key()) == KEY_ID
    raw = base64.urlsafe_b64decode(PUBLIC_B64 + "=")
    assert hashlib.sha256(raw).hexdigest()[:16] == KEY_ID
    assert commit(5_000_000, SALT) == hashlib.sha256(SALT + b"5000000").hexdigest() == COMMITMENT
    expected_ref = hmac.new(
        ZONE_SECRET, b"veil.subject.v1\x0091110105MA01ABCD2X", hashlib.sha256
    ).hexdigest()
    assert subject_ref("91110105MA01ABCD2X", ZONE_SECRET) == expected_ref == SUBJECT_REF


def test_commitment_hides_the_value() -> None:
    one, two = new_salt(), new_salt()
    assert len(one) == 16 and one != two
    assert commit(5_000_000, one) != commit(5_000_000, two)  # different salts
    assert commit(5_000_000, one) == commit(5_000_000, one)  # same salt, same claim
    assert commit(5_000_000, one) != commit(5_000_001, one)
    assert commit({"n": 3, "m": 1}, one) == commit({"m": 1, "n": 3}, one)  # canonical
    with pytest.raises(InvalidRequest):  # a short salt
        commit(5_000_000, b"short")


def test_claim_fingerprints_and_subject_refs() -> None:
    # Fingerprints are salt-free (equal claims compare equal across consents) but keyed.
    a = claim_fingerprint(ZONE_SECRET, "revenue_12m", 5_000_000)
    assert a == claim_fingerprint(ZONE_SECRET, "revenue_12m", 5_000_000)
    assert a != claim_fingerprint(ZONE_SECRET, "revenue_12m", 5_000_001)
    assert a != claim_fingerprint(ZONE_SECRET, "founded", 5_000_000)
    assert a != claim_fingerprint(bytes(32), "revenue_12m", 5_000_000)
    assert a != hashlib.sha256(canonical_json(["revenue_12m", 5_000_000])).hexdigest()
    assert subject_ref("X", ZONE_SECRET) != subject_ref("X", bytes(32))
    with pytest.raises(ValueError):
        subject_ref("X", b"too short")


# ---------------------------------------------------------------------------------------------
# Signing and verifying
# ---------------------------------------------------------------------------------------------


def test_canonical_form_and_signature_are_stable() -> None:
    document = sign(receipt(), KEY)
    assert signing_input(document) == CANONICAL.encode()
    assert document["signature"] == SIGNATURE
    assert document["issued_at"] == "2026-03-01T08:30:00Z"  # UTC, whole seconds
    assert set(document) == {*RECEIPT_FIELDS, "signature"}


def test_round_trip() -> None:
    r = receipt()
    document = sign(r, KEY)
    assert verify(document, keys()) is True
    assert parse_receipt(document) == r
    # Through JSON text and back, as a third party would receive it.
    assert verify(json.loads(json.dumps(document, indent=2)), keys())
    # Other time zones normalise to UTC.
    local = receipt(issued_at=datetime(2026, 3, 1, 16, 30, tzinfo=timezone(timedelta(hours=8))))
    assert local.issued_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    # No claim (ENT_STATUS): a null commitment.
    plain = sign(receipt(claim_commitment=None, template_id="ENT_STATUS", outcome="yes"), KEY)
    assert plain["claim_commitment"] is None and verify(plain, keys())


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("outcome", "no_match"),
        ("tenant_id", "bank-b"),
        ("template_version", 2),
        ("claim_commitment", commit(4_000_000, SALT)),
        ("issued_at", "2026-03-01T08:30:01Z"),
        ("dataset_version", "2024-12.2"),
        ("subject_ref", "0" * 64),
    ],
)
def test_tampered_member_fails(member: str, value: object) -> None:
    document = sign(receipt(), KEY)
    document[member] = value
    with pytest.raises(BadSignature) as err:
        verify(document, keys())
    assert err.value.code == "receipt_bad_signature"


def test_wrong_key_fails() -> None:
    other = generate_key()
    # A receipt signed by another key but claiming our key id.
    document = receipt().fields()
    document["signature"] = b64url_encode(other.sign(signing_input(document)))
    with pytest.raises(BadSignature):
        verify(document, keys())
    # A key mapping that lies about the key id is treated as unknown.
    with pytest.raises(UnknownKey):
        verify(sign(receipt(), KEY), {KEY_ID: other.public_key()})
    # sign() refuses a receipt naming another key.
    with pytest.raises(ValueError):
        sign(receipt(), other)


def test_unknown_key_id() -> None:
    other = generate_key()
    document = sign(receipt(key_id=key_id(other)), other)
    with pytest.raises(UnknownKey) as err:
        verify(document, keys())
    assert (err.value.code, err.value.status) == ("receipt_unknown_key", 422)
    assert verify(document, {**keys(), key_id(other): other.public_key()})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("signature"),
        lambda d: d.pop("outcome"),
        lambda d: d.update(extra="x"),
        lambda d: d.update(signature="not base64!"),
        lambda d: d.update(signature=SIGNATURE[:-2]),
        lambda d: d.update(signature=17),
        lambda d: d.update(template_version="1"),
        lambda d: d.update(template_version=True),
        lambda d: d.update(issued_at="2026-03-01 08:30:00"),
        lambda d: d.update(issued_at="2026-03-01T08:30:00+00:00"),
        lambda d: d.update(issued_at=1772353800),
        lambda d: d.update(subject_ref="XYZ"),
        lambda d: d.update(key_id="ABC"),
        lambda d: d.update(outcome=""),
        lambda d: d.update(tenant_id="bank\n-a"),
    ],
)
def test_malformed(mutate: Any) -> None:
    document = sign(receipt(), KEY)
    mutate(document)
    with pytest.raises(MalformedReceipt) as err:
        verify(document, keys())
    assert (err.value.code, err.value.status) == ("receipt_malformed", 400)
    with pytest.raises(MalformedReceipt):
        verify(["not", "an", "object"], keys())  # type: ignore[arg-type]


def test_receipt_fields_are_validated() -> None:
    for change in (
        {"template_version": 0},
        {"subject_ref": "A" * 64},
        {"claim_commitment": "12"},
        {"key_id": "0" * 15},
        {"purpose": ""},
        {"issued_at": datetime(2026, 3, 1)},
    ):
        with pytest.raises(ValueError):
            receipt(**change)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "receipt.pem"
    save_private_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert key_id(load_private_key(path)) == KEY_ID
    save_private_key(path, KEY)  # replacing keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind
    (tmp_path / "rsa.pem").write_text("not a key")
    with pytest.raises(ValueError):
        load_private_key(tmp_path / "rsa.pem")


def test_key_ring_rotation_keeps_old_receipts_verifiable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_key_ring(tmp_path)
    ring = load_key_ring(tmp_path, create=True)
    assert ring.retired == ()
    old_receipt = sign(receipt(key_id=ring.current_id), ring.current)

    rotated = rotate_key_ring(tmp_path)
    assert rotated.current_id != ring.current_id
    assert [key_id(k) for k in rotated.retired] == [ring.current_id]
    new_receipt = sign(receipt(key_id=rotated.current_id, receipt_id="rcpt_0002"), rotated.current)

    published = public_key_document(rotated)
    assert published == {
        "keys": [
            {
                "key_id": rotated.current_id,
                "algorithm": "Ed25519",
                "public_key": b64url_encode(rotated.current.public_key().public_bytes_raw()),
                "status": "current",
            },
            {
                "key_id": ring.current_id,
                "algorithm": "Ed25519",
                "public_key": b64url_encode(ring.current.public_key().public_bytes_raw()),
                "status": "retired",
            },
        ]
    }
    # A third party: fetch the keys document, verify both receipts offline.
    public = public_keys_from_document(json.loads(json.dumps(published)))
    assert verify(old_receipt, public) and verify(new_receipt, public)
    assert public.keys() == rotated.public_keys().keys()


def test_fixed_key_document() -> None:
    assert public_key_document(KeyRing(KEY)) == {
        "keys": [
            {
                "key_id": KEY_ID,
                "algorithm": "Ed25519",
                "public_key": PUBLIC_B64,
                "status": "current",
            }
        ]
    }
    bad = {"keys": [{"key_id": "0" * 16, "algorithm": "Ed25519", "public_key": PUBLIC_B64}]}
    with pytest.raises(MalformedReceipt):
        public_keys_from_document(bad)
    with pytest.raises(MalformedReceipt):
        public_keys_from_document({"keys": [{"algorithm": "RSA"}]})
