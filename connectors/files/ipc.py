"""Arrow IPC files, in the file format (``ARROW1`` magic; Feather v2) or the stream format.

Every file's schema is checked (one layout for all files, every declared column present and
convertible) before the first batch is read; the batches then go through strict conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from connectors.convert import Conformer
from connectors.errors import MalformedFile
from connectors.files.common import Tracker, same_layout
from connectors.files.storage import FileStorage
from policies.model import Table

__all__ = ["IpcReader"]


class IpcReader:
    """Reads Arrow IPC files of one source, batch by batch as they were written."""

    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage

    def batches(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: Tracker
    ) -> Iterator[pa.RecordBatch]:
        first_schema = None
        for path, _ in files:
            name = self.storage.display(path)
            with self.storage.input_file(path) as handle:
                try:
                    schema = _ipc_reader(handle).schema
                except (pa.ArrowInvalid, OSError) as exc:
                    raise MalformedFile(
                        f"not a readable Arrow IPC file ({type(exc).__name__})", file=name
                    ) from None
            first_schema = same_layout(schema, first_schema, name)
            conformer.check_schema(schema, file=name)
        return self._rows(conformer, files, tracker)

    def _rows(
        self, conformer: Conformer, files: list[tuple[str, int]], tracker: Tracker
    ) -> Iterator[pa.RecordBatch]:
        for path, size in files:
            name = self.storage.display(path)
            with self.storage.input_file(path) as handle:
                row = 1
                try:
                    for batch in _ipc_batches(_ipc_reader(handle)):
                        yield conformer.convert(batch, file=name, first_row=row)
                        row += batch.num_rows
                        tracker.report(batch.num_rows, handle.tell())
                except (pa.ArrowInvalid, OSError) as exc:
                    raise MalformedFile(
                        f"the Arrow IPC file cannot be read ({type(exc).__name__})", file=name
                    ) from None
            tracker.file_done(size)


def _ipc_reader(handle: Any) -> Any:
    handle.seek(0)
    magic = handle.read(6)
    handle.seek(0)
    if magic == b"ARROW1":
        return pa.ipc.open_file(handle)
    return pa.ipc.open_stream(handle)


def _ipc_batches(reader: Any) -> Iterator[pa.RecordBatch]:
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader
