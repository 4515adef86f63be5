"""Reading verification rows back from the state store, the same way in every module.

A statement takes a bounded number of parameters, so the consent, decision and receipt modules
put long id lists into ``IN (...)`` in chunks. (Stored times come back through
:func:`sandbox.clock.utc`.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["IN_CHUNK", "chunks"]

IN_CHUNK: Final = 900  # bound parameters per IN (...) list (SQLite allows 32766)


def chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    """``items`` in slices of at most :data:`IN_CHUNK`, one ``IN (...)`` list each."""
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
