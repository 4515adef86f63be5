"""JSON lines files: one object per line, parsed by Arrow's JSON reader with the declared types.

Arrow parses each block with an explicit schema (dates as text, converted strictly afterwards)
and refuses a file with a bad line without saying where; the file is then read again line by line
in Python to name the first bad line and why (not UTF-8, not JSON, not an object, an undeclared
field, a value of the wrong JSON type). A file none of whose records has the privacy unit is
refused, as a CSV file without the unit column would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Final

import pyarrow as pa
import pyarrow.json as pajson

from connectors.convert import Conformer, arrow_type
from connectors.errors import (
    InvalidEncoding,
    MalformedJson,
    MissingUnitColumn,
    SchemaMismatch,
    SourceError,
    SourceUnreachable,
    TypeConversion,
)
from connectors.files.common import Tracker, iter_lines
from connectors.files.storage import FileStorage
from policies.model import ColumnType, Table

__all__ = ["JsonlReader"]

BLOCK_BYTES: Final = 16 << 20
"""Bytes of a file that Arrow parses at a time."""


class JsonlReader:
    """Reads JSON lines files of one source; ``extra_columns`` as the source's option."""

    def __init__(self, storage: FileStorage, extra_columns: str) -> None:
        self.storage = storage
        self.extra_columns = extra_columns

    def batches(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: Tracker
    ) -> Iterator[pa.RecordBatch]:
        fields = [
            (c.name, pa.string() if c.type == ColumnType.DATE else arrow_type(c.type))
            for c in table.source_columns
        ]
        names = [name for name, _ in fields]
        if table.generated is not None:  # only ever null: a value makes Arrow refuse the file
            fields.append((table.generated.name, pa.null()))
        explicit = pa.schema(fields)
        parse = pajson.ParseOptions(
            explicit_schema=explicit,
            unexpected_field_behavior="error" if self.extra_columns == "error" else "ignore",
            newlines_in_values=False,
        )
        read = pajson.ReadOptions(block_size=BLOCK_BYTES)
        unit = conformer.unit
        for path, size in files:
            name = self.storage.display(path)
            row = 1
            unit_values = 0
            try:
                with self.storage.input_file(path) as stream:
                    reader = pajson.open_json(stream, read_options=read, parse_options=parse)
                    for chunk in reader:
                        batch = chunk.select(names)
                        line_of = self._line_locator(path)
                        out = conformer.convert(batch, file=name, first_row=row, line_of=line_of)
                        if unit is not None:
                            unit_values += len(batch) - batch.column(unit).null_count
                        row += batch.num_rows
                        tracker.report(batch.num_rows, min(size, stream.tell()))
                        yield out
            except pa.ArrowInvalid:
                raise self._diagnose(path, table) from None
            except OSError as exc:
                raise SourceUnreachable(
                    f"the file cannot be read ({type(exc).__name__})", file=name
                ) from None
            if row > 1 and unit is not None and unit_values == 0:
                raise MissingUnitColumn(
                    "no record of the file has the privacy unit", file=name, column=unit
                )
            tracker.file_done(size)

    def _line_locator(self, path: str) -> Callable[[int], int | None]:
        """The physical line of record ``row`` (1-based; blank lines are no records) of ``path``."""

        def line_of(row: int) -> int | None:
            with self.storage.input_stream(path) as stream:
                seen = 0
                for number, raw in enumerate(iter_lines(stream), 1):
                    if raw.strip():
                        seen += 1
                        if seen == row:
                            return number
            return None

        return line_of

    def _diagnose(self, path: str, table: Table) -> SourceError:
        """Arrow refused the file: find the first bad line in Python to say where and why."""
        name = self.storage.display(path)
        declared = {c.name: c.type for c in table.source_columns}
        generated = table.generated.name if table.generated is not None else None
        failures: dict[str, int] = {}
        first: tuple[int, int, str] | None = None
        row = 0
        with self.storage.input_stream(path) as stream:
            for number, raw in enumerate(iter_lines(stream), 1):
                if not raw.strip():
                    continue
                row += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return InvalidEncoding("the line is not valid UTF-8", file=name, line=number)
                try:
                    record = json.loads(text)
                except ValueError:
                    return MalformedJson("the line is not valid JSON", file=name, line=number)
                if not isinstance(record, dict):
                    return MalformedJson("the line is not a JSON object", file=name, line=number)
                for key, value in record.items():
                    if key == generated and value is not None:
                        return SchemaMismatch(
                            'the column is generated by the load (generated = "row_number"): '
                            "the source must not have it",
                            file=name,
                            line=number,
                            column=key,
                        )
                    ctype = declared.get(key)
                    if ctype is None:
                        if self.extra_columns == "error":
                            return SchemaMismatch(
                                "the record has a field the policy does not declare "
                                "(declare it, or load with extra_columns=ignore)",
                                file=name,
                                line=number,
                                column=str(key)[:100],
                            )
                        continue
                    if value is not None and not _json_fits(value, ctype):
                        failures[key] = failures.get(key, 0) + 1
                        if first is None:
                            first = (number, row, key)
        if first is not None:
            ctype = declared[first[2]]
            return TypeConversion(
                f"{sum(failures.values())} value(s) do not convert to the declared types; "
                f"the first is not a valid {ctype.value}",
                file=name,
                line=first[0],
                row=first[1],
                column=first[2],
                failures=failures,
            )
        return MalformedJson("the file cannot be parsed as JSON lines", file=name)


def _json_fits(value: object, ctype: ColumnType) -> bool:
    if ctype == ColumnType.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if ctype == ColumnType.FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ctype == ColumnType.BOOLEAN:
        return isinstance(value, bool)
    return isinstance(value, str)  # STRING, and DATE (its format is checked on conversion)
