"""Verification requests: what a verifier asks and what a subject grants, as checked shapes.

This module owns the two request shapes (:class:`VerifyRequest`, :class:`ConsentRequest`), the
parsing of a verification request from a JSON object and of a batch body (JSON or CSV), and the
field rules a request meets before anything is read (lengths, integers, the purpose code, the
salt). They are
public rules, answered with their own codes (``invalid_request``), so they stay apart from the
decision, whose refusals must all look alike.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sandbox import jsonbody
from sandbox.errors import InvalidRequest, VeilError
from sandbox.verification.receipts import MIN_SALT_BYTES

__all__ = [
    "MAX_BATCH_LINES",
    "MAX_SALT_BYTES",
    "OBJECT_ID",
    "PURPOSE",
    "ConsentRequest",
    "VerifyRequest",
    "parse_batch",
    "parse_csv",
    "parse_request",
    "parse_salt",
]

MAX_BATCH_LINES: Final = 50_000
MAX_SALT_BYTES: Final = 64
PURPOSE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
OBJECT_ID: Final = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class VerifyRequest:
    """One verification request: which template (version, or the latest), about whom, with which
    claim and salt (shared by the subject through the consent), under which consent, and why."""

    template: str
    subject: str
    consent: str
    purpose: str
    version: int | None = None
    claim: object = None
    salt: str | None = None  # hex, at least 16 bytes


@dataclass(frozen=True)
class ConsentRequest:
    tenant: str
    template: str
    purpose: str
    expires_at: datetime
    version: int | None = None
    claim_commitment: str | None = None
    max_uses: int = 1


_LINE_FIELDS: Final = ("template", "version", "subject", "claim", "salt", "consent", "purpose")


def parse_request(doc: object) -> VerifyRequest:
    """A request line from a JSON object (a batch line or the single call's body)."""
    if not isinstance(doc, Mapping):
        raise InvalidRequest("each request is a JSON object")
    for name in doc:
        if name not in _LINE_FIELDS:
            shown = name if isinstance(name, str) and OBJECT_ID.match(name) else "?"
            raise InvalidRequest(f"unknown field {shown!r}", field=shown)
    return VerifyRequest(
        template=_text(doc, "template"),
        version=_optional_int(doc.get("version"), "version"),
        subject=_text(doc, "subject"),
        claim=doc.get("claim"),
        salt=_optional_text(doc.get("salt"), "salt"),
        consent=_text(doc, "consent"),
        purpose=_text(doc, "purpose"),
    )


def parse_batch(body: bytes, content_type: str) -> list[VerifyRequest | VeilError]:
    """The request lines of a batch body: JSON ``{"requests": [...]}`` (read by
    :mod:`sandbox.jsonbody`: no deep nesting, no member named twice) or CSV (``text/csv``,
    :func:`parse_csv`). A body that is neither is refused whole (``invalid_request``, or
    ``duplicate_json_key``); a bad line is an error in its place."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/csv":
        try:
            return parse_csv(body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidRequest("a batch body is UTF-8") from None
    if media not in ("application/json", ""):
        raise InvalidRequest("send application/json or text/csv")
    try:
        doc = jsonbody.loads(body)
    except json.JSONDecodeError:
        raise InvalidRequest("the body is not JSON (in UTF-8)") from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"requests"}
        or not isinstance(doc["requests"], list)
    ):
        raise InvalidRequest('a JSON batch is {"requests": [...]}', field="requests")
    if len(doc["requests"]) > MAX_BATCH_LINES:
        raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines", field="requests")
    lines: list[VerifyRequest | VeilError] = []
    for item in doc["requests"]:
        try:
            lines.append(parse_request(item))
        except VeilError as exc:
            lines.append(exc)
    return lines


def parse_csv(body: str) -> list[VerifyRequest | VeilError]:
    """Request lines from CSV text with a header line naming the columns (any order):
    ``template, version, subject, claim, salt, consent, purpose``; ``version``, ``claim`` and
    ``salt`` may be empty or left out. A bad line is an error in its place, not a failed batch;
    text the CSV reader cannot read (e.g. a field over its limit of 131,072 characters, a NUL)
    fails the batch, naming the line."""
    reader = csv.reader(io.StringIO(body, newline=""))
    try:
        return _csv_lines(reader)
    except csv.Error:
        raise InvalidRequest(f"line {reader.line_num} of the CSV cannot be read") from None


def _csv_lines(reader: Iterator[list[str]]) -> list[VerifyRequest | VeilError]:
    header = next(reader, None)
    if header is None:
        raise InvalidRequest("a CSV batch starts with a header line")
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in _LINE_FIELDS]
    if unknown or len(set(names)) != len(names):
        raise InvalidRequest(f"CSV columns are {', '.join(_LINE_FIELDS)}, each at most once")
    missing = {"template", "subject", "consent", "purpose"} - set(names)
    if missing:
        raise InvalidRequest(f"the CSV header lacks {', '.join(sorted(missing))}")
    out: list[VerifyRequest | VeilError] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(out) >= MAX_BATCH_LINES:
            raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines")
        if len(row) != len(names):
            out.append(InvalidRequest(f"a line has {len(names)} fields"))
            continue
        doc: dict[str, object] = {}
        try:
            for name, value in zip(names, row, strict=True):
                value = value.strip()
                if name in ("version", "claim"):
                    doc[name] = _csv_int(value, name)
                elif name == "salt":
                    doc[name] = value or None
                else:
                    doc[name] = value
            out.append(parse_request(doc))
        except VeilError as exc:
            out.append(exc)
    return out


def parse_salt(text: str | None) -> bytes:
    """A request's salt (hex): the consent's, needed to open its claim commitment."""
    if text is None:
        raise InvalidRequest("a claim needs the consent's salt (hex)", field="salt")
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest("salt is hex", field="salt") from None
    if not MIN_SALT_BYTES <= len(salt) <= MAX_SALT_BYTES:
        raise InvalidRequest(f"salt has {MIN_SALT_BYTES} to {MAX_SALT_BYTES} bytes", field="salt")
    return salt


def _csv_int(value: str, name: str) -> int | None:
    if not value:
        return None
    if not re.fullmatch(r"-?[0-9]{1,16}", value):
        raise InvalidRequest(f"{name} must be an integer", field=name)
    return int(value)


def _text(doc: Mapping[str, object], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} is required (a string)", field=name)
    if len(value) > 64:
        raise InvalidRequest(f"{name} has at most 64 characters", field=name)
    return value


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2 * MAX_SALT_BYTES:
        raise InvalidRequest(f"{name} must be a string", field=name)
    return value


def _optional_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
        raise InvalidRequest(f"{name} must be a positive integer", field=name)
    return value
