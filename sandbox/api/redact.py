"""Keep the server's filesystem out of answers.

Load records, quality reports and some error details name files under the data directory (a
source under ``sources/``, a workspace). Over HTTP a caller names sources relative to
``<data_dir>/sources``, so that is how they are shown back; any other path under the data
directory is shown relative to it. Only the data directory's own prefix is rewritten: a path
the caller sent (e.g. an ``s3://`` URL, with its password already redacted) stays as sent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")


@functools.lru_cache(maxsize=8)
def _prefixes(data_dir: Path) -> tuple[tuple[str, str], ...]:
    """(prefix, replacement) pairs, longest prefix first."""
    pairs: dict[str, str] = {}
    for base in {str(data_dir), str(data_dir.resolve()), str(data_dir.absolute())}:
        if base in ("", ".", "/"):
            continue
        pairs[f"{base}/sources/"] = ""
        pairs[f"{base}/"] = ""
        pairs[base] = "."
    return tuple(sorted(pairs.items(), key=lambda p: -len(p[0])))


def text(value: str, data_dir: Path) -> str:
    """``value`` with every data-directory path made relative."""
    for prefix, replacement in _prefixes(data_dir):
        if prefix in value:
            value = value.replace(prefix, replacement)
    return value


def tree(value: T, data_dir: Path) -> T:
    """A JSON-like value with every string passed through :func:`text` (same shape)."""
    return cast(T, _tree(value, data_dir))


def _tree(value: Any, data_dir: Path) -> Any:
    if isinstance(value, str):
        return text(value, data_dir)
    if isinstance(value, dict):
        return {k: _tree(v, data_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tree(v, data_dir) for v in value]
    return value
