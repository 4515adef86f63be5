"""File sources: one file, a directory, or a glob of many, in one format, behind the protocol.

A :class:`FileConnector` joins where the files are (:class:`~connectors.files.storage.FileStorage`:
the local disk, or object storage in :mod:`connectors.s3`) to the reader of their format —
:mod:`~connectors.files.csv`, :mod:`~connectors.files.parquet`, :mod:`~connectors.files.jsonl`,
:mod:`~connectors.files.ipc` — and checks what every format shares: no file may be empty, nor
the source as a whole, and conversion failures are reported at its end.

Files of one source are read in name order and concatenated; they must share one layout (the
same CSV header, the same Arrow schema). Every format streams: nothing holds a whole file in
memory. Options of every format: ``extra_columns`` (``error`` or ``ignore``) and ``batch_size``
(rows per batch); CSV has more (:mod:`connectors.files.csv_options`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import pyarrow as pa

from connectors.base import ProgressCallback, reader_from
from connectors.convert import Conformer, policy_schema
from connectors.errors import EmptySource, InvalidSource
from connectors.files.common import FormatReader, Tracker
from connectors.files.csv import CsvReader
from connectors.files.csv_options import CSV_OPTIONS, CsvOptions
from connectors.files.ipc import IpcReader
from connectors.files.jsonl import JsonlReader
from connectors.files.parquet import ParquetReader
from connectors.files.storage import FileStorage
from connectors.sink import ParquetScan
from connectors.source import FILE_KINDS, SourceSpec, check_options, option_int
from policies.model import Table

__all__ = ["COMMON_OPTIONS", "DEFAULT_BATCH_ROWS", "FileConnector"]

COMMON_OPTIONS: Final = ("extra_columns", "batch_size")
DEFAULT_BATCH_ROWS: Final = 131_072
"""Rows per batch unless the source sets ``batch_size``."""


class FileConnector:
    """The files of a source on ``storage`` (default: the local disk, at the spec's location)."""

    def __init__(self, spec: SourceSpec, storage: FileStorage | None = None) -> None:
        if spec.kind not in FILE_KINDS:
            raise InvalidSource("not a file source")
        storage = storage or FileStorage(spec.location)
        allowed = [*COMMON_OPTIONS, *storage.options]
        if spec.kind == "csv":
            allowed += CSV_OPTIONS
        check_options(spec.options, allowed, spec.kind)
        self.spec = spec
        self.storage = storage
        self.batch_rows = option_int(spec.options, "batch_size", DEFAULT_BATCH_ROWS, minimum=1)
        self.extra_columns = spec.options.get("extra_columns", "error")
        if self.extra_columns not in ("error", "ignore"):
            raise InvalidSource("extra_columns is 'error' or 'ignore'")
        self.reader = self._reader()
        self._files: list[tuple[str, int]] | None = None

    def _reader(self) -> FormatReader:
        kind = self.spec.kind
        if kind == "csv":
            return CsvReader(self.storage, CsvOptions.parse(self.spec.options), self.batch_rows)
        if kind == "parquet":
            return ParquetReader(self.storage, self.batch_rows)
        if kind == "ipc":
            return IpcReader(self.storage)
        return JsonlReader(self.storage, self.extra_columns)

    @property
    def name(self) -> str:
        return self.spec.name

    def files(self) -> list[tuple[str, int]]:
        """(path, size) of every file of the source, in name order (listed once)."""
        if self._files is None:
            self._files = self.storage.expand()
        return self._files

    def size_bytes(self) -> int | None:
        return sum(size for _, size in self.files())

    def open(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> pa.RecordBatchReader:
        files = self._nonempty_files()
        conformer = Conformer(table, extra_columns=self.extra_columns)
        tracker = Tracker(table.name, sum(s for _, s in files), on_progress)
        batches = self.reader.batches(table, conformer, files, tracker)
        return reader_from(policy_schema(table), _finish(batches, conformer, self.name))

    def scan(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> ParquetScan | None:
        """The fast path of a load: local Parquet files whose columns need no value-by-value
        conversion (:func:`~connectors.convert.exact_type`), for the build connection to read
        itself, in parallel. Every check of :meth:`open` that precedes reading (files, schemas,
        the privacy unit column, empty files and sources) runs here first. ``None``: stream
        :meth:`open` instead (other formats, object storage, columns that need conversion)."""
        if not isinstance(self.reader, ParquetReader) or not self.storage.is_local:
            return None
        files = self._nonempty_files()
        conformer = Conformer(table, extra_columns=self.extra_columns)
        return self.reader.scan(table, conformer, files, self.name, on_progress)

    def _nonempty_files(self) -> list[tuple[str, int]]:
        files = self.files()
        for path, size in files:
            if size == 0:
                raise EmptySource("the file is empty", file=self.storage.display(path))
        return files


def _finish(
    batches: Iterator[pa.RecordBatch], conformer: Conformer, source: str
) -> Iterator[pa.RecordBatch]:
    """Yield the batches; then raise the conversion failures, or refuse an empty source."""
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        if batch.num_rows:
            yield batch
    conformer.finish()
    if rows == 0:
        raise EmptySource("the source holds no records", file=source)
