"""Parquet files: streamed through Arrow with strict conversion, or scanned by DuckDB directly.

Every file's schema is checked (one layout for all files, every declared column present and
convertible) before the first row is read. A load may skip Arrow: local files whose columns need
no value-by-value conversion (:func:`~connectors.convert.exact_type`) are handed to the build
connection to read itself, in parallel (:meth:`ParquetReader.scan`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import Progress, ProgressCallback
from connectors.convert import Conformer, duckdb_type, exact_type
from connectors.errors import EmptySource, MalformedFile
from connectors.files.common import Tracker, same_layout
from connectors.files.storage import FileStorage
from connectors.sink import ParquetScan
from policies.model import Table

__all__ = ["ParquetReader"]


class ParquetReader:
    """Reads Parquet files of one source, ``batch_rows`` rows at a time."""

    def __init__(self, storage: FileStorage, batch_rows: int) -> None:
        self.storage = storage
        self.batch_rows = batch_rows

    def batches(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: Tracker
    ) -> Iterator[pa.RecordBatch]:
        self._layout(conformer, files)
        return self._rows(table, conformer, tracker, files)

    def scan(
        self,
        table: Table,
        conformer: Conformer,
        files: list[tuple[str, int]],
        source: str,
        on_progress: ProgressCallback | None,
    ) -> ParquetScan | None:
        """The direct read of ``files`` (none empty, checked by the caller) if every column
        needs no conversion; ``None``: stream :meth:`batches` instead. The checks of
        :meth:`batches` that precede reading run here first; ``source`` names the source."""
        schema, rows = self._layout(conformer, files)
        if table.generated is not None:
            return None  # the row numbers are made while streaming
        if len({n.lower() for n in schema.names}) != len(schema.names):
            return None  # DuckDB matches names without case: let Arrow pick the exact column
        if not all(exact_type(schema.field(c.name).type, c.type) for c in table.columns):
            return None
        if rows == 0:
            raise EmptySource("the source holds no records", file=source)
        total = sum(size for _, size in files)

        def progress(share: float) -> None:
            assert on_progress is not None
            on_progress(Progress(table.name, int(rows * share), int(total * share), total))

        return ParquetScan(
            files=tuple(path for path, _ in files),
            columns=tuple((c.name, duckdb_type(c.type)) for c in table.columns),
            on_progress=progress if on_progress is not None else None,
        )

    def _file(self, path: str) -> tuple[Any, pq.ParquetFile]:
        handle = self.storage.input_file(path)
        try:
            return handle, pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            handle.close()
            raise MalformedFile(
                f"not a readable Parquet file ({type(exc).__name__})",
                file=self.storage.display(path),
            ) from None

    def _layout(self, conformer: Conformer, files: list[tuple[str, int]]) -> tuple[pa.Schema, int]:
        """Check every file's schema before the first row is read; (schema, total rows)."""
        first_schema: pa.Schema | None = None
        rows = 0
        for path, _ in files:
            name = self.storage.display(path)
            handle, pf = self._file(path)
            with handle:
                first_schema = same_layout(pf.schema_arrow, first_schema, name)
                conformer.check_schema(pf.schema_arrow, file=name)
                rows += pf.metadata.num_rows
        assert first_schema is not None
        return first_schema, rows

    def _rows(
        self,
        table: Table,
        conformer: Conformer,
        tracker: Tracker,
        files: list[tuple[str, int]],
    ) -> Iterator[pa.RecordBatch]:
        columns = [c.name for c in table.source_columns]
        for path, size in files:
            name = self.storage.display(path)
            handle, pf = self._file(path)
            with handle:
                total = max(1, pf.metadata.num_rows)
                row = 1
                try:
                    for batch in pf.iter_batches(batch_size=self.batch_rows, columns=columns):
                        yield conformer.convert(batch, file=name, first_row=row)
                        row += batch.num_rows
                        tracker.report(batch.num_rows, size * (row - 1) // total)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise MalformedFile(
                        f"the Parquet file cannot be read ({type(exc).__name__})", file=name
                    ) from None
            tracker.file_done(size)
