"""The one small protocol every source kind implements: what a connector yields, and how far it is.

A :class:`Connector` streams one policy table as Arrow record batches in the policy's declared
column order and types (:mod:`connectors.convert`); a :class:`Scannable` one can also describe a
direct read for the workspace build. Connectors are made from a
:class:`~connectors.source.SourceSpec` by :func:`connectors.connect.connect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pyarrow as pa

from policies.model import Table

if TYPE_CHECKING:  # annotations only: the protocol does not need the sink (and DuckDB) loaded
    from connectors.sink import ParquetScan

__all__ = [
    "Connector",
    "Progress",
    "ProgressCallback",
    "Scannable",
    "reader_from",
]


@dataclass(frozen=True)
class Progress:
    """How far a table's load has come. ``bytes_*`` are source bytes, when the source knows."""

    table: str
    rows: int
    bytes_read: int | None = None
    bytes_total: int | None = None

    @property
    def fraction(self) -> float | None:
        if self.bytes_read is None or not self.bytes_total:
            return None
        return min(1.0, self.bytes_read / self.bytes_total)


ProgressCallback = Callable[[Progress], None]


@runtime_checkable
class Connector(Protocol):
    """One table's source. ``open`` may raise a ``SourceError`` at once (unreachable, schema) or
    while the reader is consumed (malformed input, conversions); either way nothing is loaded."""

    @property
    def name(self) -> str:
        """The source for messages and reports, without credentials."""
        ...

    def size_bytes(self) -> int | None:
        """The source's size in bytes (files: their total), or ``None`` when unknown."""
        ...

    def open(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> pa.RecordBatchReader:
        """Stream ``table``: the declared columns, in declared order, of the declared types."""
        ...


@runtime_checkable
class Scannable(Protocol):
    """A connector that can hand some sources to the build connection to read directly (faster
    than streaming Arrow through Python); an optional addition to :class:`Connector`."""

    def scan(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> ParquetScan | None:
        """Check the source like ``open`` and describe a direct read, or ``None`` (use ``open``)."""
        ...


def reader_from(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatchReader:
    """What ``open`` returns: ``batches`` (of ``schema``) as a reader, consumed lazily."""
    return pa.RecordBatchReader.from_batches(schema, batches)
