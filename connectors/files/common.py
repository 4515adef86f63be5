"""What the file format readers share: the reader protocol, progress, lines, one layout per source.

Each format (:mod:`~connectors.files.csv`, :mod:`~connectors.files.parquet`,
:mod:`~connectors.files.jsonl`, :mod:`~connectors.files.ipc`) has a :class:`FormatReader` that
turns the files of a source into batches of the policy table, converted by a
:class:`~connectors.convert.Conformer`; :class:`~connectors.files.connector.FileConnector` picks
the reader and checks what the formats have in common (empty files, an empty source).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Protocol

import pyarrow as pa

from connectors.base import Progress, ProgressCallback
from connectors.convert import Conformer
from connectors.errors import SchemaMismatch
from policies.model import Table

__all__ = ["CHUNK", "FormatReader", "Tracker", "iter_lines", "same_layout"]

CHUNK: Final = 1 << 20
"""Bytes read from a file at a time where a reader reads raw bytes."""


class FormatReader(Protocol):
    """Reads the files of one source, all of one format."""

    def batches(
        self,
        table: Table,
        conformer: Conformer,
        files: list[tuple[str, int]],
        tracker: Tracker,
    ) -> Iterator[pa.RecordBatch]:
        """The files' records as batches of ``table``, in file order. Checks that need no record
        (layouts, schemas) may run at once, before the iterator is returned; the rest run while
        it is consumed."""
        ...


class Tracker:
    """Rows and source bytes read so far, reported through ``on_progress``."""

    def __init__(self, table: str, total: int | None, callback: ProgressCallback | None):
        self.table = table
        self.total = total
        self.callback = callback
        self.rows = 0
        self.done = 0  # bytes of completed files

    def report(self, rows: int, within: int = 0) -> None:
        self.rows += rows
        if self.callback is not None:
            read = None if self.total is None else min(self.total, self.done + within)
            self.callback(Progress(self.table, self.rows, read, self.total))

    def file_done(self, size: int) -> None:
        self.done += size
        if self.callback is not None:
            self.callback(Progress(self.table, self.rows, self.done, self.total))


def iter_lines(stream: Any) -> Iterator[bytes]:
    """Physical lines (``\\n``-terminated, terminator dropped) of a binary stream."""
    rest = b""
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


def same_layout(schema: pa.Schema, first: pa.Schema | None, name: str) -> pa.Schema:
    """The layout every file of a source has: the first file's schema (``first``, or ``schema``
    itself for the first file); file ``name``'s ``schema`` must match it in names and types."""
    if first is None:
        return schema
    if schema.names != first.names or [f.type for f in schema] != [f.type for f in first]:
        for field in schema:
            if field.name not in first.names:
                raise SchemaMismatch(
                    "the column is not in the first file", file=name, column=field.name[:100]
                )
            if first.field(field.name).type != field.type:
                raise SchemaMismatch(
                    "the column's type differs from the first file's", file=name, column=field.name
                )
        raise SchemaMismatch("the columns differ from the first file's", file=name)
    return first
