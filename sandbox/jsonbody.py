"""The one reader of JSON that callers send: every request body, and a verification batch.

It reads JSON as Python's reader does (numbers, ``NaN`` and the rest alike), with two refusals:

- **nesting deeper than** :data:`MAX_DEPTH` arrays and objects (``invalid_request``, with the
  ``limit``). Python's reader recurses, and fails deep enough with a ``RecursionError`` that
  depends on the stack it runs on; the depth is counted first, on the text, so that a deep body
  is a coded refusal whatever the stack. No body Veil takes nests deeper than a few levels.
- **a member named twice** in one object, at any depth (``duplicate_json_key``, naming the
  member and where it is). Readers disagree on which one counts — Python's takes the last, others
  the first — so a body that a proxy or a log reads as one request could mean another to Veil.

Anything that is not JSON (not UTF-8, malformed, an integer of more digits than Python reads) is
a :class:`json.JSONDecodeError`, as from Python's own reader, for the caller to answer as it
answers malformed input.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any, Final

from sandbox.errors import DuplicateJsonKey, InvalidRequest

__all__ = ["MAX_DEPTH", "loads"]

MAX_DEPTH: Final = 64
_NOT_BRACKETS: Final = bytes(set(range(256)) - set(b"[]{}"))
_NOT_BRACKETS_OR_QUOTES: Final = bytes(set(range(256)) - set(b'[]{}"'))
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1, +1, -1, -1 as signed bytes
_CHUNK: Final = 2**16
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
_STRING: Final = re.compile(rb'"[^"]*"')  # once escapes are gone
# A member name is repeated in a problem only when it is a plain word.
_SHOWN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def loads(data: bytes) -> Any:
    """The JSON value of ``data`` (UTF-8, a byte order mark allowed), refusing deep nesting and
    repeated member names."""
    _check_depth(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("not UTF-8", "", exc.start) from None
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except _Repeated:
        raise _duplicate(text) from None
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # e.g. an integer beyond Python's digit limit
        raise json.JSONDecodeError(type(exc).__name__, text, 0) from None


def _check_depth(data: bytes) -> None:
    """Refuse ``data`` if its arrays and objects nest deeper than :data:`MAX_DEPTH`, counted on
    the bytes before anything parses them. Every bracket counts first (a bound: quick, and enough
    for any body without brackets inside its strings); only past the limit are the strings taken
    out (escapes first) and the brackets counted again."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    if not _deeper(data.translate(None, _NOT_BRACKETS)):
        return
    if b'"' in data:  # brackets inside strings may have counted: count again without them
        structure = _ESCAPE.sub(b"", data).translate(None, _NOT_BRACKETS_OR_QUOTES)
        if not _deeper(_STRING.sub(b"", structure)):
            return
    raise InvalidRequest(f"the JSON body nests deeper than {MAX_DEPTH} levels", limit=MAX_DEPTH)


def _deeper(brackets: bytes) -> bool:
    """Whether a run of brackets (and nothing else) nests deeper than :data:`MAX_DEPTH`, read in
    chunks so that a deep one is found without reading it all."""
    steps = brackets.translate(_STEPS)
    level = 0
    for start in range(0, len(steps), _CHUNK):
        chunk = array("b", steps[start : start + _CHUNK])
        if max(accumulate(chunk, initial=level)) > MAX_DEPTH:
            return True
        level += sum(chunk)
    return False


class _Repeated(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


class _Twice:
    """In the second reading of a body with a repeated name: the object that repeats it."""

    def __init__(self, key: str) -> None:
        self.key = key


def _mark(pairs: list[tuple[str, Any]]) -> Any:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            return _Twice(key)
        found[key] = value
    return found


def _duplicate(text: str) -> DuplicateJsonKey:
    """The refusal naming the first object (in the text) that repeats a name, and the name."""
    where = _find(json.loads(text, object_pairs_hook=_mark), ())
    assert where is not None
    path, key = where
    names = [*path, key]
    field = ".".join(str(n) if isinstance(n, int) or _SHOWN.fullmatch(n) else "?" for n in names)
    shown = key if _SHOWN.fullmatch(key) else "?"
    return DuplicateJsonKey(
        f"the JSON body names {shown!r} twice in one object ({field})", field=field, key=shown
    )


def _find(value: Any, path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str] | None:
    """Where the first :class:`_Twice` is (the value is at most :data:`MAX_DEPTH` deep)."""
    if isinstance(value, _Twice):
        return path, value.key
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for name, item in items:
        found = _find(item, (*path, name))
        if found is not None:
            return found
    return None
