"""Canonical JSON (the RFC 8785 subset without floats) and base64url: the bytes that receipts,
audit entries and checkpoints sign or hash, so that anyone can recompute them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Final

from sandbox.errors import NotCanonicalizable

MAX_SAFE_INTEGER: Final = 2**53 - 1
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


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
