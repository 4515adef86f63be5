"""Which sources a load may name: a source string parsed, and over HTTP confined to one folder.

A remote caller must not make the server read any file it can: loads over HTTP give
``confine_to`` (``<data_dir>/sources``), relative paths are taken from it, and a local file source
that leaves it (absolute elsewhere, ``..``) is refused with ``invalid_source``. Object storage and
PostgreSQL sources are URLs, not files, and pass as they are. The CLI on a data directory gives
no folder: it reads any path the local user can.
"""

from __future__ import annotations

from pathlib import Path

from connectors.errors import InvalidSource
from connectors.source import SourceSpec, parse_source

__all__ = ["source_spec"]


def source_spec(text: str, root: Path | None) -> SourceSpec:
    """Parse a source; with ``root``, a local file source must lie inside it (relative paths
    are taken from it)."""
    if not isinstance(text, str) or len(text) > 4096:
        raise InvalidSource("a source is a string of at most 4096 characters")
    spec = parse_source(text)
    if root is None or spec.kind == "postgresql" or spec.location.startswith("s3://"):
        return spec
    location = Path(spec.location)
    if not location.is_absolute():
        location = root / location
    if ".." in location.parts:
        raise InvalidSource("a file source may not contain '..'", file=spec.location[:200])
    fixed: list[str] = []
    for part in location.parts:
        if any(c in part for c in "*?[{"):
            break
        fixed.append(part)
    base = root.resolve()
    prefix = Path(*fixed).resolve() if fixed else base
    if not prefix.is_relative_to(base):
        raise InvalidSource(
            "over HTTP, file sources must lie in the data directory's sources/ folder",
            file=spec.location[:200],
        )
    return SourceSpec(spec.kind, str(location), spec.options)
