"""The witness: every signed checkpoint also kept outside the state store (``VEIL_AUDIT_WITNESS``).

A *file* gets one line of JSON per checkpoint, appended and flushed to disk; a *directory* gets
one file per checkpoint, ``checkpoint-<number, 12 digits>.json``, written whole and renamed into
place. Either way nothing in it is ever rewritten, so a copy taken at any time, or a file on
storage the database's writers cannot reach (another host, append-only or write-once storage),
keeps every head the log ever had. ``veil audit verify --witness PATH`` checks the log against
them (``docs/audit.md``, The witness).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["append", "latest", "read_witness"]

_TAIL: Final = 64 * 1024  # a checkpoint line is about 400 bytes


def _line(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def append(path: Path, document: Mapping[str, Any]) -> None:
    """Add ``document`` to the witness at ``path`` (a directory, or a file created if missing)."""
    if path.is_dir():
        target = path / f"checkpoint-{int(document['number']):012d}.json"
        partial = target.with_suffix(".part")
        with partial.open("w", encoding="utf-8") as out:
            out.write(_line(document) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        return
    with path.open("a", encoding="utf-8") as out:
        out.write(_line(document) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _parse(text: str) -> dict[str, Any]:
    """A witnessed head, or ``{}`` for a line that is not a JSON object (reported, not skipped)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_witness(path: Path) -> list[dict[str, Any]]:
    """Every head the witness holds, in the order written. ``FileNotFoundError`` if there is
    no witness at ``path``."""
    if path.is_dir():
        files = sorted(path.glob("checkpoint-*.json"))
        return [_parse(f.read_text(encoding="utf-8")) for f in files]
    text = path.read_text(encoding="utf-8")
    return [_parse(line) for line in text.splitlines() if line.strip()]


def latest(path: Path) -> dict[str, Any] | None:
    """The last head written to the witness at ``path`` (``None``: no witness or none yet),
    reading only its end."""
    if path.is_dir():
        files = sorted(path.glob("checkpoint-*.json"))
        return _parse(files[-1].read_text(encoding="utf-8")) if files else None
    try:
        with path.open("rb") as raw:
            size = raw.seek(0, os.SEEK_END)
            raw.seek(max(0, size - _TAIL))
            tail = raw.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    return _parse(lines[-1]) if lines else None
