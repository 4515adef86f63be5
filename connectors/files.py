"""File sources: CSV, Parquet, JSON lines and Arrow IPC; one file, a directory, or a glob of many.

Files of one source are read in name order and concatenated; they must share one layout (the
same CSV header, the same Arrow schema). Every format streams: nothing holds a whole file in
memory.

CSV is parsed by DuckDB's CSV reader (``read_csv`` with explicit column types, ``strict_mode`` and
a rejects table), because it reports each bad record's physical line and column — wrong number of
fields, unterminated or stray quotes, invalid UTF-8, values that do not convert — where Arrow's CSV
reader reports none and accepts stray quotes silently. Its output reaches us as Arrow batches.
Text in another encoding (``encoding=gbk``, ``gb18030``, ``latin-1``, …) is transcoded to UTF-8 in
a temporary file first, which also locates undecodable bytes by line and column; so are CSV files
on object storage, which DuckDB cannot read here.

CSV options: ``delimiter`` (one character, or ``tab``/``comma``/``semicolon``/``pipe``), ``quote``
(one character, or ``none``), ``escape`` (default: the quote, i.e. ``""`` inside quotes),
``encoding`` (default ``utf-8``; a BOM is skipped), ``header`` (default ``true``), ``skip_rows``
(lines before the header), ``columns`` (comma-separated names when ``header=false``; default: the
policy's order), ``null_values`` (comma-separated; default: the empty field). All formats:
``extra_columns`` (``error`` or ``ignore``), ``batch_size`` (rows per batch).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import io
import itertools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from connectors.base import Progress, ProgressCallback, reader_from
from connectors.convert import Conformer, arrow_type, duckdb_type, exact_type, policy_schema
from connectors.errors import (
    EmptySource,
    InvalidEncoding,
    InvalidSource,
    MalformedCsv,
    MalformedFile,
    MalformedJson,
    MissingUnitColumn,
    SchemaMismatch,
    SourceError,
    SourceNotFound,
    SourceUnreachable,
    TypeConversion,
)
from connectors.sink import ParquetScan
from connectors.source import SourceSpec, check_options, option_bool, option_int
from policies.model import ColumnType, Table

__all__ = ["COMMON_OPTIONS", "CSV_OPTIONS", "DEFAULT_BATCH_ROWS", "CsvOptions", "FileConnector"]

COMMON_OPTIONS: Final = ("extra_columns", "batch_size")
DEFAULT_BATCH_ROWS: Final = 131_072
"""Rows per batch unless the source sets ``batch_size``."""
CSV_OPTIONS: Final = (
    "delimiter",
    "quote",
    "escape",
    "encoding",
    "header",
    "skip_rows",
    "columns",
    "null_values",
)
_CHUNK: Final = 1 << 20
_JSON_BLOCK: Final = 16 << 20
_REJECTS_LIMIT: Final = 100_000  # per file; counts beyond it are lower bounds

_NAMED_DELIMITERS: Final = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_FIELD_COUNTS: Final = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


def _lit(text: str) -> str:
    """A DuckDB string literal."""
    if "\x00" in text:
        raise InvalidSource("NUL characters are not allowed in CSV options or paths")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class CsvOptions:
    delimiter: str = ","
    quote: str = '"'
    escape: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    skip_rows: int = 0
    columns: tuple[str, ...] | None = None
    null_values: tuple[str, ...] = ("",)

    @property
    def native(self) -> bool:
        """Whether DuckDB reads the bytes as they are (UTF-8, with or without a BOM)."""
        return self.encoding in ("utf-8", "utf-8-sig")

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> CsvOptions:
        delimiter = options.get("delimiter", ",")
        delimiter = _NAMED_DELIMITERS.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1 or delimiter in "\r\n":
            raise InvalidSource("the CSV delimiter is one character (or tab, semicolon, pipe)")
        quote = options.get("quote", '"')
        if quote.lower() == "none":
            quote = ""
        if len(quote) > 1 or quote == delimiter or quote in ("\r", "\n"):
            raise InvalidSource("the CSV quote is one character other than the delimiter, or none")
        escape = options.get("escape", quote)
        if len(escape) > 1:
            raise InvalidSource("the CSV escape is one character")
        try:
            encoding = codecs.lookup(options.get("encoding", "utf-8")).name
        except LookupError:
            raise InvalidSource("unknown text encoding (e.g. utf-8, gbk, gb18030)") from None
        columns = None
        if "columns" in options:
            columns = tuple(c.strip() for c in options["columns"].split(",") if c.strip())
        nulls: tuple[str, ...] = ("",)
        if "null_values" in options:
            nulls = tuple(v for v in options["null_values"].split(","))
        return cls(
            delimiter=delimiter,
            quote=quote,
            escape=escape,
            encoding=encoding,
            header=option_bool(options, "header", True),
            skip_rows=option_int(options, "skip_rows", 0),
            columns=columns,
            null_values=nulls,
        )

    def python_dialect(self) -> dict[str, Any]:
        """The same dialect for Python's csv module (header and diagnostics only)."""
        if not self.quote:
            return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE, "strict": True}
        escape = None if self.escape in ("", self.quote) else self.escape
        return {
            "delimiter": self.delimiter,
            "quotechar": self.quote,
            "doublequote": self.escape in ("", self.quote),
            "escapechar": escape,
            "strict": True,
        }


class _Tracker:
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


def _iter_lines(stream: Any) -> Iterator[bytes]:
    """Physical lines (``\\n``-terminated, terminator dropped) of a binary stream."""
    rest = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


class FileConnector:
    """Files on the local disk (or, subclassed, any Arrow filesystem)."""

    storage_options: tuple[str, ...] = ()

    def __init__(self, spec: SourceSpec) -> None:
        if spec.kind not in ("csv", "parquet", "jsonl", "ipc"):
            raise InvalidSource("not a file source")
        allowed = [*COMMON_OPTIONS, *self.storage_options]
        if spec.kind == "csv":
            allowed += CSV_OPTIONS
        check_options(spec.options, allowed, spec.kind)
        self.spec = spec
        self.options = spec.options
        self.batch_rows = option_int(spec.options, "batch_size", DEFAULT_BATCH_ROWS, minimum=1)
        self.extra_columns = spec.options.get("extra_columns", "error")
        if self.extra_columns not in ("error", "ignore"):
            raise InvalidSource("extra_columns is 'error' or 'ignore'")
        self.csv = CsvOptions.parse(spec.options) if spec.kind == "csv" else None
        self._files: list[tuple[str, int]] | None = None

    # --- storage -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    @property
    def is_local(self) -> bool:
        return True

    def display(self, path: str) -> str:
        """A file's name in messages."""
        return path

    def expand(self) -> list[tuple[str, int]]:
        """(path, size) of every file of the source, in name order."""
        pattern = os.path.expanduser(self.spec.location)
        try:
            if glob.has_magic(pattern):
                paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
                if not paths:
                    raise SourceNotFound("no file matches the pattern", file=pattern)
            elif os.path.isdir(pattern):
                paths = sorted(
                    str(p) for p in Path(pattern).iterdir() if p.is_file() and p.name[0] not in "._"
                )
                if not paths:
                    raise SourceNotFound("the directory holds no files", file=pattern)
            elif os.path.isfile(pattern):
                paths = [pattern]
            elif os.path.exists(pattern):
                raise SourceNotFound("not a regular file", file=pattern)
            else:
                raise SourceNotFound("the file does not exist", file=pattern)
            out = []
            for p in paths:
                path = os.path.abspath(p)
                if not os.access(path, os.R_OK):
                    raise SourceUnreachable(
                        "the file cannot be read (permission denied)", file=path
                    )
                out.append((path, os.path.getsize(path)))
            return out
        except OSError as exc:
            raise SourceUnreachable(
                f"the files cannot be listed ({type(exc).__name__})", file=pattern
            ) from None

    def files(self) -> list[tuple[str, int]]:
        if self._files is None:
            self._files = self.expand()
        return self._files

    def size_bytes(self) -> int | None:
        return sum(size for _, size in self.files())

    def _input_file(self, path: str) -> Any:
        try:
            return self.filesystem.open_input_file(path)
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=self.display(path)) from None
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be opened ({type(exc).__name__})", file=self.display(path)
            ) from None

    def _input_stream(self, path: str) -> Any:
        try:
            return self.filesystem.open_input_stream(path)
        except FileNotFoundError:
            raise SourceNotFound("the file does not exist", file=self.display(path)) from None
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be opened ({type(exc).__name__})", file=self.display(path)
            ) from None

    # --- the protocol --------------------------------------------------------------------

    def open(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> pa.RecordBatchReader:
        files = self.files()
        for path, size in files:
            if size == 0:
                raise EmptySource("the file is empty", file=self.display(path))
        conformer = Conformer(table, extra_columns=self.extra_columns)
        tracker = _Tracker(table.name, sum(s for _, s in files), on_progress)
        if self.spec.kind == "csv":
            batches = self._csv(table, conformer, files, tracker)
        elif self.spec.kind == "parquet":
            batches = self._parquet(table, conformer, files, tracker)
        elif self.spec.kind == "ipc":
            batches = self._ipc(table, conformer, files, tracker)
        else:
            batches = self._jsonl(table, conformer, files, tracker)
        return reader_from(policy_schema(table), _finish(batches, conformer, self.name))

    # --- Parquet -------------------------------------------------------------------------

    def _parquet_file(self, path: str) -> tuple[Any, pq.ParquetFile]:
        handle = self._input_file(path)
        try:
            return handle, pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            handle.close()
            raise MalformedFile(
                f"not a readable Parquet file ({type(exc).__name__})", file=self.display(path)
            ) from None

    def _parquet(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: _Tracker
    ) -> Iterator[pa.RecordBatch]:
        self._parquet_layout(conformer, files)
        return self._parquet_rows(table, conformer, tracker, files)

    def _parquet_layout(
        self, conformer: Conformer, files: list[tuple[str, int]]
    ) -> tuple[pa.Schema, int]:
        """Check every file's schema before the first row is read; (schema, total rows)."""
        first_schema: pa.Schema | None = None
        rows = 0
        for path, _ in files:
            name = self.display(path)
            handle, pf = self._parquet_file(path)
            with handle:
                first_schema = _same_layout(pf.schema_arrow, first_schema, name)
                conformer.check_schema(pf.schema_arrow, file=name)
                rows += pf.metadata.num_rows
        assert first_schema is not None
        return first_schema, rows

    def scan(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> ParquetScan | None:
        """The fast path of a load: local Parquet files whose columns need no value-by-value
        conversion (:func:`~connectors.convert.exact_type`), for the build connection to read
        itself, in parallel. Every check of :meth:`open` that precedes reading (files, schemas,
        the privacy unit column, empty files and sources) runs here first. ``None``: stream
        :meth:`open` instead (other formats, object storage, columns that need conversion)."""
        if self.spec.kind != "parquet" or not self.is_local:
            return None
        files = self.files()
        for path, size in files:
            if size == 0:
                raise EmptySource("the file is empty", file=self.display(path))
        conformer = Conformer(table, extra_columns=self.extra_columns)
        schema, rows = self._parquet_layout(conformer, files)
        if len({n.lower() for n in schema.names}) != len(schema.names):
            return None  # DuckDB matches names without case: let Arrow pick the exact column
        if not all(exact_type(schema.field(c.name).type, c.type) for c in table.columns):
            return None
        if rows == 0:
            raise EmptySource("the source holds no records", file=self.name)
        total = sum(size for _, size in files)

        def progress(share: float) -> None:
            assert on_progress is not None
            on_progress(Progress(table.name, int(rows * share), int(total * share), total))

        return ParquetScan(
            files=tuple(path for path, _ in files),
            columns=tuple((c.name, duckdb_type(c.type)) for c in table.columns),
            on_progress=progress if on_progress is not None else None,
        )

    def _parquet_rows(
        self,
        table: Table,
        conformer: Conformer,
        tracker: _Tracker,
        files: list[tuple[str, int]],
    ) -> Iterator[pa.RecordBatch]:
        columns = [c.name for c in table.columns]
        for path, size in files:
            name = self.display(path)
            handle, pf = self._parquet_file(path)
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

    # --- Arrow IPC -----------------------------------------------------------------------

    def _ipc(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: _Tracker
    ) -> Iterator[pa.RecordBatch]:
        first_schema = None
        name = self.display(files[0][0])
        for path, _ in files:
            name = self.display(path)
            with self._input_file(path) as handle:
                try:
                    schema = _ipc_reader(handle).schema
                except (pa.ArrowInvalid, OSError) as exc:
                    raise MalformedFile(
                        f"not a readable Arrow IPC file ({type(exc).__name__})", file=name
                    ) from None
            first_schema = _same_layout(schema, first_schema, name)
            conformer.check_schema(schema, file=name)
        return self._ipc_rows(conformer, files, tracker)

    def _ipc_rows(
        self, conformer: Conformer, files: list[tuple[str, int]], tracker: _Tracker
    ) -> Iterator[pa.RecordBatch]:
        for path, size in files:
            name = self.display(path)
            with self._input_file(path) as handle:
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

    # --- JSON lines ----------------------------------------------------------------------

    def _jsonl(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: _Tracker
    ) -> Iterator[pa.RecordBatch]:
        explicit = pa.schema(
            [
                (c.name, pa.string() if c.type == ColumnType.DATE else arrow_type(c.type))
                for c in table.columns
            ]
        )
        parse = pajson.ParseOptions(
            explicit_schema=explicit,
            unexpected_field_behavior="error" if self.extra_columns == "error" else "ignore",
            newlines_in_values=False,
        )
        read = pajson.ReadOptions(block_size=_JSON_BLOCK)
        unit = conformer.unit
        for path, size in files:
            name = self.display(path)
            row = 1
            unit_values = 0
            try:
                with self._input_file(path) as stream:
                    reader = pajson.open_json(stream, read_options=read, parse_options=parse)
                    for chunk in reader:
                        batch = chunk.select(explicit.names)
                        line_of = self._json_line_locator(path)
                        out = conformer.convert(batch, file=name, first_row=row, line_of=line_of)
                        if unit is not None:
                            unit_values += len(batch) - batch.column(unit).null_count
                        row += batch.num_rows
                        tracker.report(batch.num_rows, min(size, stream.tell()))
                        yield out
            except pa.ArrowInvalid:
                raise self._diagnose_json(path, table) from None
            except OSError as exc:
                raise SourceUnreachable(
                    f"the file cannot be read ({type(exc).__name__})", file=name
                ) from None
            if row > 1 and unit is not None and unit_values == 0:
                raise MissingUnitColumn(
                    "no record of the file has the privacy unit", file=name, column=unit
                )
            tracker.file_done(size)

    def _json_line_locator(self, path: str) -> Callable[[int], int | None]:
        def line_of(row: int) -> int | None:
            with self._input_stream(path) as stream:
                seen = 0
                for number, raw in enumerate(_iter_lines(stream), 1):
                    if raw.strip():
                        seen += 1
                        if seen == row:
                            return number
            return None

        return line_of

    def _diagnose_json(self, path: str, table: Table) -> SourceError:
        """Arrow refused the file: find the first bad line in Python to say where and why."""
        name = self.display(path)
        declared = {c.name: c.type for c in table.columns}
        failures: dict[str, int] = {}
        first: tuple[int, int, str] | None = None
        row = 0
        with self._input_stream(path) as stream:
            for number, raw in enumerate(_iter_lines(stream), 1):
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

    # --- CSV -----------------------------------------------------------------------------

    def _csv(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: _Tracker
    ) -> Iterator[pa.RecordBatch]:
        assert self.csv is not None
        staging = tempfile.TemporaryDirectory(prefix="veil-csv-")
        try:
            first_local = self._local_csv(files[0][0], Path(staging.name), 0)
            layout = self._csv_layout(first_local, files[0][0], table, conformer, None)
        except BaseException:
            staging.cleanup()
            raise
        return self._csv_rows(table, conformer, files, tracker, staging, first_local, layout)

    def _csv_rows(
        self,
        table: Table,
        conformer: Conformer,
        files: list[tuple[str, int]],
        tracker: _Tracker,
        staging: tempfile.TemporaryDirectory[str],
        first_local: str,
        layout: _CsvLayout,
    ) -> Iterator[pa.RecordBatch]:
        assert self.csv is not None
        con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        try:
            for index, (path, size) in enumerate(files):
                name = self.display(path)
                if index == 0:
                    local = first_local
                else:
                    local = self._local_csv(path, Path(staging.name), index)
                    self._csv_layout(local, path, table, conformer, layout)
                rejects = f"veil_rejects_{index}"
                sql = self._csv_sql(table, layout, local, index)
                rows_before = tracker.rows
                row = 1
                line_of = self._csv_line_locator(local)
                try:
                    reader = con.sql(sql).to_arrow_reader(self.batch_rows)
                    for batch in reader:
                        within = min(size, (tracker.rows - rows_before) * layout.line_bytes)
                        tracker.report(batch.num_rows, within)
                        out = conformer.convert(batch, file=name, first_row=row, line_of=line_of)
                        row += batch.num_rows
                        yield out
                except duckdb.Error as exc:
                    raise MalformedCsv(
                        f"the CSV file cannot be read ({type(exc).__name__})", file=name
                    ) from None
                self._csv_rejects(con, rejects, layout, conformer, name)
                if local != path:
                    with contextlib.suppress(OSError):
                        os.unlink(local)
                tracker.file_done(size)
        finally:
            con.close()
            staging.cleanup()

    def _csv_sql(self, table: Table, layout: _CsvLayout, local: str, index: int) -> str:
        """DuckDB reads every field as text; :class:`Conformer` converts it, strictly (DuckDB's
        own casts round ``3.5`` to an integer and take hex, ``yes`` and ``2024-2-1``)."""
        opts = self.csv
        assert opts is not None
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(layout.names)))
        position = {n: i for i, n in enumerate(layout.names)}
        select = ", ".join(f'c{position[c.name]} AS "{c.name}"' for c in table.columns)
        nulls = ", ".join(_lit(v) for v in opts.null_values)
        return (
            f"SELECT {select} FROM read_csv({_lit(local)}, columns={{{columns}}}, "
            f"header={'true' if opts.header else 'false'}, skip={opts.skip_rows}, "
            f"auto_detect=false, delim={_lit(opts.delimiter)}, quote={_lit(opts.quote)}, "
            f"escape={_lit(opts.escape)}, strict_mode=true, null_padding=false, "
            f"nullstr=[{nulls}], store_rejects=true, rejects_table='veil_rejects_{index}', "
            f"rejects_scan='veil_scans_{index}', rejects_limit={_REJECTS_LIMIT}, "
            f"encoding='utf-8')"
        )

    def _csv_line_locator(self, local: str) -> Callable[[int], int | None]:
        """The physical line where data record ``row`` (1-based) of a local CSV file starts."""
        opts = self.csv
        assert opts is not None

        def line_of(row: int) -> int | None:
            with open(local, encoding="utf-8-sig", errors="replace", newline="") as handle:
                for _ in range(opts.skip_rows):
                    handle.readline()
                reader = csv.reader(handle, **opts.python_dialect())
                try:
                    if opts.header:
                        next(reader)
                    seen, end = 0, reader.line_num
                    for record in reader:
                        start, end = end + 1, reader.line_num
                        if not record:
                            continue
                        seen += 1
                        if seen == row:
                            return start + opts.skip_rows
                except csv.Error:
                    return None
            return None

        return line_of

    def _csv_rejects(
        self,
        con: duckdb.DuckDBPyConnection,
        rejects: str,
        layout: _CsvLayout,
        conformer: Conformer,
        name: str,
    ) -> None:
        """Turn DuckDB's rejects into our errors: structural ones at once, casts counted."""

        def column(duck_name: object) -> str | None:
            if not isinstance(duck_name, str) or not duck_name.startswith("c"):
                return None
            index = int(duck_name[1:]) if duck_name[1:].isdigit() else -1
            return layout.names[index] if 0 <= index < len(layout.names) else None

        structural = con.sql(
            f"SELECT line, column_name, error_type, error_message FROM {rejects} "
            "WHERE error_type <> 'CAST' ORDER BY line LIMIT 1"
        ).fetchall()
        if structural:
            line, duck_column, error_type, message = structural[0]
            line = int(line)
            col = column(duck_column)
            if error_type in ("INVALID UNICODE", "INVALID ENCODING"):
                raise InvalidEncoding(
                    "the value is not valid UTF-8", file=name, line=line, column=col
                )
            if error_type in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
                counts = _FIELD_COUNTS.search(str(message))
                if counts:
                    expected, found = int(counts.group(1)), int(counts.group(2))
                    raise MalformedCsv(
                        f"wrong number of fields: expected {expected}, found {found}",
                        file=name,
                        line=line,
                        expected_fields=expected,
                        found_fields=found,
                    )
                raise MalformedCsv("wrong number of fields", file=name, line=line)
            if error_type == "UNQUOTED VALUE":
                raise MalformedCsv(
                    "bad quoting: a quoted value is not closed, or text follows its closing quote",
                    file=name,
                    line=line,
                    column=col,
                )
            if error_type == "LINE SIZE OVER MAXIMUM":
                raise MalformedCsv("the line is too long", file=name, line=line)
            raise MalformedCsv(
                f"the record cannot be parsed ({str(error_type).lower()})", file=name, line=line
            )
        casts = con.sql(
            f"SELECT column_name, count(*) AS n, min(line) AS first FROM {rejects} "
            "WHERE error_type = 'CAST' GROUP BY column_name ORDER BY first"
        ).fetchall()
        for duck_column, count, first in casts:
            col = column(duck_column) or str(duck_column)
            conformer.add_failures(col, int(count), file=name, line=int(first), row=None)

    def _local_csv(self, path: str, staging: Path, index: int) -> str:
        """A local UTF-8 copy of the file (the file itself when it already is one)."""
        assert self.csv is not None
        if self.is_local and self.csv.native:
            return path
        target = staging / f"{index}.csv"
        name = self.display(path)
        decoder = None if self.csv.native else codecs.getincrementaldecoder(self.csv.encoding)()
        try:
            with self._input_stream(path) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    if decoder is None:
                        out.write(chunk)
                        continue
                    try:
                        out.write(decoder.decode(chunk).encode("utf-8"))
                    except UnicodeDecodeError:
                        raise self._locate_encoding_error(path) from None
                if decoder is not None:
                    try:
                        out.write(decoder.decode(b"", final=True).encode("utf-8"))
                    except UnicodeDecodeError:
                        raise self._locate_encoding_error(path) from None
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be read ({type(exc).__name__})", file=name
            ) from None
        return str(target)

    def _locate_encoding_error(self, path: str) -> SourceError:
        """Find the first undecodable line (and the field it falls in) of ``path``."""
        assert self.csv is not None
        name = self.display(path)
        encoding = self.csv.encoding
        ascii_based = codecs.lookup(encoding).name not in ("utf-16", "utf-32") and not (
            encoding.startswith(("utf-16", "utf-32"))
        )
        if not ascii_based:
            return InvalidEncoding(f"the file is not valid {encoding}", file=name)
        header: list[str] | None = None
        with self._input_stream(path) as stream:
            for number, raw in enumerate(_iter_lines(stream), 1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    column = None
                    if header is not None:
                        prefix = raw[: exc.start].decode(encoding, errors="replace")
                        fields = next(csv.reader([prefix], **self.csv.python_dialect()), [""])
                        index = max(0, len(fields) - 1)
                        column = header[index] if index < len(header) else None
                    return InvalidEncoding(
                        f"the text is not valid {encoding}", file=name, line=number, column=column
                    )
                if (
                    header is None
                    and self.csv.header
                    and number > self.csv.skip_rows
                    and text.strip()
                ):
                    with contextlib.suppress(csv.Error):
                        header = [h.strip() for h in next(csv.reader([text.lstrip("\ufeff")]))]
        return InvalidEncoding(f"the file ends inside a {encoding} character", file=name)

    def _csv_layout(
        self,
        local: str,
        path: str,
        table: Table,
        conformer: Conformer,
        expected: _CsvLayout | None,
    ) -> _CsvLayout:
        """Read the header (or the first record) and check it against the policy and file 1."""
        opts = self.csv
        assert opts is not None
        name = self.display(path)
        line = opts.skip_rows + 1
        try:
            with open(local, "rb") as handle:
                head = handle.read(_CHUNK).decode("utf-8-sig", errors="replace")
        except OSError as exc:
            raise SourceUnreachable(
                f"the file cannot be read ({type(exc).__name__})", file=name
            ) from None
        body = head.splitlines(keepends=True)[opts.skip_rows :]
        if not "".join(body).strip():
            raise EmptySource("the file holds no records", file=name)
        try:
            record = next(csv.reader(io.StringIO("".join(body)), **opts.python_dialect()))
        except csv.Error:
            raise MalformedCsv("bad quoting in the first record", file=name, line=line) from None
        except StopIteration:
            raise EmptySource("the file holds no records", file=name) from None
        if "\ufffd" in "".join(record):
            with open(local, "rb") as raw:
                raw_line = next(itertools.islice(raw, opts.skip_rows, None), b"")
            try:
                raw_line.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEncoding("the text is not valid UTF-8", file=name, line=line) from None
        if opts.header:
            names = [field.strip() for field in record]
            if any(not n for n in names):
                raise SchemaMismatch("the header has an empty column name", file=name, line=line)
        else:
            declared = opts.columns or tuple(c.name for c in table.columns)
            if len(record) != len(declared):
                raise SchemaMismatch(
                    f"the first record has {len(record)} fields; expected {len(declared)} "
                    "(set columns= to name them)",
                    file=name,
                    line=line,
                )
            names = list(declared)
        if expected is not None and names != expected.names:
            raise SchemaMismatch("the header differs from the first file's", file=name, line=line)
        if expected is None:
            conformer.check_names(names, file=name, line=line if opts.header else None)
        data_lines = body[1:] if opts.header else body
        sample = "".join(data_lines[:-1]) if len(data_lines) > 1 else "".join(data_lines)
        count = max(1, sample.count("\n"))
        line_bytes = max(1, len(sample.encode("utf-8")) // count)
        return _CsvLayout(names=names, line_bytes=line_bytes)


@dataclass(frozen=True)
class _CsvLayout:
    names: list[str]
    line_bytes: int


def _json_fits(value: object, ctype: ColumnType) -> bool:
    if ctype == ColumnType.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if ctype == ColumnType.FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ctype == ColumnType.BOOLEAN:
        return isinstance(value, bool)
    return isinstance(value, str)  # STRING, and DATE (its format is checked on conversion)


def _same_layout(schema: pa.Schema, first: pa.Schema | None, name: str) -> pa.Schema:
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
