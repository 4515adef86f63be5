"""CSV files, parsed by DuckDB's CSV reader and converted strictly.

CSV is parsed by DuckDB's CSV reader (``read_csv`` with every field as text, ``strict_mode`` and a
rejects table), because it reports each bad record's physical line and column — wrong number of
fields, unterminated or stray quotes, invalid UTF-8 — where Arrow's CSV reader reports none and
accepts stray quotes silently. Its output reaches us as Arrow batches, which the
:class:`~connectors.convert.Conformer` converts. Text in another encoding (``encoding=gbk``,
``gb18030``, ``latin-1``, …) is transcoded to UTF-8 in a temporary file first, which also locates
undecodable bytes by line and column; so are CSV files on object storage, which DuckDB cannot read
here. The options are :mod:`connectors.files.csv_options`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from connectors.convert import Conformer
from connectors.errors import (
    EmptySource,
    InvalidEncoding,
    InvalidSource,
    MalformedCsv,
    SchemaMismatch,
    SourceError,
    SourceUnreachable,
)
from connectors.files.common import CHUNK, Tracker, iter_lines
from connectors.files.csv_options import CsvOptions
from connectors.files.storage import FileStorage
from policies.model import Table

__all__ = ["CsvReader"]

_REJECTS_LIMIT: Final = 100_000  # per file; counts beyond it are lower bounds
_FIELD_COUNTS: Final = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


def _lit(text: str) -> str:
    """A DuckDB string literal."""
    if "\x00" in text:
        raise InvalidSource("NUL characters are not allowed in CSV options or paths")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class _CsvLayout:
    """A CSV file's column names, and an estimate of its bytes per line (for progress)."""

    names: list[str]
    line_bytes: int


class CsvReader:
    """Reads CSV files of one source with ``options``, ``batch_rows`` rows at a time."""

    def __init__(self, storage: FileStorage, options: CsvOptions, batch_rows: int) -> None:
        self.storage = storage
        self.options = options
        self.batch_rows = batch_rows

    def batches(
        self, table: Table, conformer: Conformer, files: list[tuple[str, int]], tracker: Tracker
    ) -> Iterator[pa.RecordBatch]:
        staging = tempfile.TemporaryDirectory(prefix="veil-csv-")
        try:
            first_local = self._local_copy(files[0][0], Path(staging.name), 0)
            layout = self._layout(first_local, files[0][0], table, conformer, None)
        except BaseException:
            staging.cleanup()
            raise
        return self._rows(table, conformer, files, tracker, staging, first_local, layout)

    def _rows(
        self,
        table: Table,
        conformer: Conformer,
        files: list[tuple[str, int]],
        tracker: Tracker,
        staging: tempfile.TemporaryDirectory[str],
        first_local: str,
        layout: _CsvLayout,
    ) -> Iterator[pa.RecordBatch]:
        con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        try:
            for index, (path, size) in enumerate(files):
                name = self.storage.display(path)
                if index == 0:
                    local = first_local
                else:
                    local = self._local_copy(path, Path(staging.name), index)
                    self._layout(local, path, table, conformer, layout)
                rejects = f"veil_rejects_{index}"
                sql = self._sql(table, layout, local, index)
                rows_before = tracker.rows
                row = 1
                line_of = self._line_locator(local)
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
                self._rejects(con, rejects, layout, conformer, name)
                if local != path:
                    with contextlib.suppress(OSError):
                        os.unlink(local)
                tracker.file_done(size)
        finally:
            con.close()
            staging.cleanup()

    def _sql(self, table: Table, layout: _CsvLayout, local: str, index: int) -> str:
        """DuckDB reads every field as text; :class:`Conformer` converts it, strictly (DuckDB's
        own casts round ``3.5`` to an integer and take hex, ``yes`` and ``2024-2-1``)."""
        opts = self.options
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(layout.names)))
        position = {n: i for i, n in enumerate(layout.names)}
        select = ", ".join(f'c{position[c.name]} AS "{c.name}"' for c in table.source_columns)
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

    def _line_locator(self, local: str) -> Callable[[int], int | None]:
        """The physical line where data record ``row`` (1-based) of a local CSV file starts."""
        opts = self.options

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

    def _rejects(
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

    def _local_copy(self, path: str, staging: Path, index: int) -> str:
        """A local UTF-8 copy of the file (the file itself when it already is one)."""
        opts = self.options
        if self.storage.is_local and opts.native:
            return path
        target = staging / f"{index}.csv"
        name = self.storage.display(path)
        decoder = None if opts.native else codecs.getincrementaldecoder(opts.encoding)()
        try:
            with self.storage.input_stream(path) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(CHUNK)
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
        name = self.storage.display(path)
        encoding = self.options.encoding
        ascii_based = codecs.lookup(encoding).name not in ("utf-16", "utf-32") and not (
            encoding.startswith(("utf-16", "utf-32"))
        )
        if not ascii_based:
            return InvalidEncoding(f"the file is not valid {encoding}", file=name)
        header: list[str] | None = None
        with self.storage.input_stream(path) as stream:
            for number, raw in enumerate(iter_lines(stream), 1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    column = None
                    if header is not None:
                        prefix = raw[: exc.start].decode(encoding, errors="replace")
                        fields = next(csv.reader([prefix], **self.options.python_dialect()), [""])
                        index = max(0, len(fields) - 1)
                        column = header[index] if index < len(header) else None
                    return InvalidEncoding(
                        f"the text is not valid {encoding}", file=name, line=number, column=column
                    )
                if (
                    header is None
                    and self.options.header
                    and number > self.options.skip_rows
                    and text.strip()
                ):
                    with contextlib.suppress(csv.Error):
                        header = [h.strip() for h in next(csv.reader([text.lstrip("\ufeff")]))]
        return InvalidEncoding(f"the file ends inside a {encoding} character", file=name)

    def _layout(
        self,
        local: str,
        path: str,
        table: Table,
        conformer: Conformer,
        expected: _CsvLayout | None,
    ) -> _CsvLayout:
        """Read the header (or the first record) and check it against the policy and file 1."""
        opts = self.options
        name = self.storage.display(path)
        line = opts.skip_rows + 1
        try:
            with open(local, "rb") as handle:
                head = handle.read(CHUNK).decode("utf-8-sig", errors="replace")
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
            declared = opts.columns or tuple(c.name for c in table.source_columns)
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
