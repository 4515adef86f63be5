"""Declared column types in Arrow and DuckDB, and strict conversion of source batches to them.

:func:`policy_schema` is the Arrow schema every connector yields for a policy table; a
:class:`Conformer` checks a source's columns against it and converts each batch. Conversion is
strict: a value that does not convert exactly (``"12a"`` as an integer, ``1.5`` as an integer,
``2024-02-30`` as a date, ``yes`` as a boolean) is a failure. Failures are counted per column over
the whole source and reported together at its end as one
:class:`~connectors.errors.TypeConversion` naming the first one's file, row/line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import InvalidSource, MissingUnitColumn, SchemaMismatch, TypeConversion
from policies.model import ColumnType, Role, Table

__all__ = [
    "Conformer",
    "arrow_type",
    "convert",
    "duckdb_type",
    "exact_type",
    "policy_schema",
]

_ARROW_TYPES: Final[Mapping[ColumnType, pa.DataType]] = {
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.STRING: pa.string(),
    ColumnType.DATE: pa.date32(),
    ColumnType.BOOLEAN: pa.bool_(),
}

# What a text value must look like to convert (stricter than Arrow's casts, which take hex
# integers, for one). Anchored, RE2 syntax.
_TEXT_PATTERNS: Final[Mapping[ColumnType, str]] = {
    ColumnType.INTEGER: r"^-?[0-9]+$",
    ColumnType.FLOAT: r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
    ColumnType.DATE: r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    ColumnType.BOOLEAN: r"^(?i:true|false|1|0)$",
}


# The same types in DuckDB, for loads that DuckDB reads itself (Parquet: connectors.files.parquet).
_DUCKDB_TYPES: Final[Mapping[ColumnType, str]] = {
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.STRING: "VARCHAR",
    ColumnType.DATE: "DATE",
    ColumnType.BOOLEAN: "BOOLEAN",
}

_SMALL_INTEGERS: Final = (
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
)


def arrow_type(ctype: ColumnType) -> pa.DataType:
    return _ARROW_TYPES[ctype]


def duckdb_type(ctype: ColumnType) -> str:
    return _DUCKDB_TYPES[ctype]


def exact_type(source: pa.DataType, ctype: ColumnType) -> bool:
    """Whether every value of ``source`` type becomes a ``ctype`` value unchanged, so that no
    value-by-value check is needed (:func:`convert` would find no failure). Integers wider than
    the target's exact range, text, timestamps and decimals need the checks: ``False``."""
    if pa.types.is_dictionary(source):
        return ctype == ColumnType.STRING and _is_text(source.value_type)
    if ctype == ColumnType.STRING:
        return bool(pa.types.is_string(source) or pa.types.is_large_string(source))
    if ctype == ColumnType.INTEGER:
        return source == pa.int64() or source in _SMALL_INTEGERS
    if ctype == ColumnType.FLOAT:  # every int32 is a double exactly; not every int64 is
        return source in (pa.float64(), pa.float32()) or source in _SMALL_INTEGERS
    if ctype == ColumnType.DATE:
        return bool(source == pa.date32())
    return bool(source == pa.bool_())  # BOOLEAN


def policy_schema(table: Table) -> pa.Schema:
    """The Arrow schema a connector yields for ``table``: declared order, declared types."""
    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=True) for c in table.columns])


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _storage(t: pa.DataType) -> pa.DataType:
    while isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_dictionary(t):
        return _storage(t.value_type)
    return t


def _compatible(source: pa.DataType, ctype: ColumnType) -> bool:
    """Whether values of ``source`` type can be converted to ``ctype`` at all (value by value)."""
    t = _storage(source)
    if pa.types.is_null(t) or _is_text(t):
        return True
    if ctype == ColumnType.INTEGER or ctype == ColumnType.FLOAT:
        return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))
    if ctype == ColumnType.DATE:
        return bool(
            pa.types.is_date(t) or (pa.types.is_timestamp(t) and t.tz is None)  # midnight only
        )
    if ctype == ColumnType.BOOLEAN:
        return bool(pa.types.is_boolean(t))
    return False  # STRING: text only


def _plain(array: pa.Array) -> pa.Array:
    """Extension types to their storage, dictionaries decoded, text to ``string``."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    while isinstance(array.type, pa.BaseExtensionType):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if _is_text(array.type) and not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    return array


def _elementwise(array: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Slow path: cast value by value; the failures become null. Only after a batch cast failed."""
    out: list[object] = []
    bad: list[bool] = []
    for i in range(len(array)):
        if not array[i].is_valid:
            out.append(None)
            bad.append(False)
            continue
        try:
            out.append(pc.cast(array.slice(i, 1), target, safe=True)[0].as_py())
            bad.append(False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            out.append(None)
            bad.append(True)
    return pa.array(out, type=target), pa.array(bad, type=pa.bool_())


def _safe_cast(array: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array | None]:
    try:
        return pc.cast(array, target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _elementwise(array, target)


def _fast_text_cast(array: pa.Array, ctype: ColumnType, target: pa.DataType) -> pa.Array | None:
    """The common case, all values good: Arrow's cast, plus checks for the few texts it accepts
    and :data:`_TEXT_PATTERNS` do not (hex integers; NaN and infinities). ``None``: take the
    slow path, which finds and counts the failures."""
    try:
        out = pc.cast(array, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if ctype == ColumnType.INTEGER:
        if pc.any(pc.match_substring(array, "x", ignore_case=True)).as_py():
            return None
    elif ctype == ColumnType.FLOAT:
        if out.null_count < len(out) and not pc.all(pc.is_finite(out)).as_py():
            return None
    elif ctype == ColumnType.BOOLEAN:
        # Arrow takes true/false/1/0 in any case, as the pattern does; nothing else.
        pass
    return out


def convert(array: pa.Array, ctype: ColumnType) -> tuple[pa.Array, pa.Array | None]:
    """``array`` as ``ctype``'s Arrow type, and a mask of failed values (``None`` if none).

    Failed values are null in the result. The caller has checked :func:`_compatible`.
    """
    target = arrow_type(ctype)
    array = _plain(array)
    t = array.type
    if t == target:
        return array, None
    if pa.types.is_null(t):
        return pa.nulls(len(array), target), None
    if _is_text(t):
        if ctype == ColumnType.STRING:
            return array, None
        fast = _fast_text_cast(array, ctype, target)
        if fast is not None:
            return fast, None
        ok = pc.match_substring_regex(array, _TEXT_PATTERNS[ctype])
        bad = pc.and_(pc.is_valid(array), pc.invert(pc.fill_null(ok, False)))
        if ctype == ColumnType.BOOLEAN:
            array = pc.utf8_lower(array)
        masked = pc.if_else(bad, pa.scalar(None, pa.string()), array)
        out, more = _safe_cast(masked, target)
        if more is not None:
            bad = pc.or_(bad, more)
        return out, bad
    if pa.types.is_floating(t) and ctype == ColumnType.INTEGER:
        finite = pc.is_finite(array)
        whole = pc.and_(finite, pc.equal(pc.floor(array), array))
        in_range = pc.and_(pc.greater_equal(array, -(2.0**63)), pc.less(array, 2.0**63))
        bad = pc.and_(pc.is_valid(array), pc.invert(pc.fill_null(pc.and_(whole, in_range), False)))
        masked = pc.if_else(bad, pa.scalar(None, t), array)
        return pc.cast(masked, target, safe=False), bad
    if pa.types.is_timestamp(t):  # to DATE: midnight values only
        days = pc.cast(array, pa.date32(), safe=False)
        back = pc.cast(pc.cast(days, pa.timestamp(t.unit)), t)
        bad = pc.fill_null(pc.not_equal(back, array), False)
        return pc.if_else(bad, pa.scalar(None, target), days), bad
    return _safe_cast(array, target)


@dataclass
class _Failure:
    column: str
    file: str | None
    row: int | None
    line: int | None = None
    line_of: Callable[[int], int | None] | None = None


class Conformer:
    """Checks a source's columns against a policy table and converts its batches, counting failures.

    ``extra_columns``: ``"error"`` (default: an undeclared source column is a schema mismatch) or
    ``"ignore"`` (undeclared columns are dropped unread where the format allows).

    A generated column (``generated = "row_number"``, the unit of data without an id) is not
    read: the source must not have it, and :meth:`convert` fills it with the row numbers 1, 2, …
    of the whole source, in the order its batches come.
    """

    def __init__(self, table: Table, *, unit: str | None = None, extra_columns: str = "error"):
        if extra_columns not in ("error", "ignore"):
            raise InvalidSource("extra_columns is 'error' or 'ignore'")
        self.table = table
        self.unit = unit or next((c.name for c in table.columns if c.role == Role.UNIT), None)
        self.generated = table.generated
        if self.generated is not None and self.generated.name == self.unit:
            self.unit = None  # made by the load: the source has no unit column to check
        self.next_row = 1  # the next row number, for a generated row-number column
        self.extra_columns = extra_columns
        self.schema = policy_schema(table)
        self.failures: dict[str, int] = {}
        self.first: _Failure | None = None

    def check_names(
        self, names: Iterable[str], *, file: str | None, line: int | None = None
    ) -> None:
        """The source's column names: every declared column present, none undeclared, no twins."""
        seen: set[str] = set()
        names = list(names)
        for name in names:
            if name in seen:
                raise SchemaMismatch("the column appears twice", file=file, line=line, column=name)
            seen.add(name)
        if self.unit is not None and self.unit not in seen:
            raise MissingUnitColumn(
                "the privacy unit column is missing from the source",
                file=file,
                line=line,
                column=self.unit,
            )
        if self.generated is not None and self.generated.name in seen:
            raise SchemaMismatch(
                'the column is generated by the load (generated = "row_number"): the source '
                "must not have it",
                file=file,
                line=line,
                column=self.generated.name,
            )
        for col in self.table.source_columns:
            if col.name not in seen:
                raise SchemaMismatch(
                    "a column declared in the policy is missing from the source",
                    file=file,
                    line=line,
                    column=col.name,
                )
        if self.extra_columns == "error":
            declared = {c.name for c in self.table.source_columns}
            for name in names:
                if name not in declared:
                    raise SchemaMismatch(
                        "the source has a column the policy does not declare "
                        "(declare it, or load with extra_columns=ignore)",
                        file=file,
                        line=line,
                        column=name[:100],
                    )

    def check_schema(self, schema: pa.Schema, *, file: str | None) -> None:
        """Names as :meth:`check_names`, and each declared column's type convertible at all."""
        self.check_names(schema.names, file=file)
        for col in self.table.source_columns:
            source_type = schema.field(col.name).type
            if not _compatible(source_type, col.type):
                raise SchemaMismatch(
                    f"the source's type {_storage(source_type)} cannot be loaded as the declared "
                    f"type {col.type.value}",
                    file=file,
                    column=col.name,
                )

    def convert(
        self,
        batch: pa.RecordBatch | pa.Table,
        *,
        file: str | None,
        first_row: int,
        line_of: Callable[[int], int | None] | None = None,
    ) -> pa.RecordBatch:
        """One batch in the declared schema; ``first_row`` is the 1-based row of its first record
        in ``file``. Failed values become null and are counted; :meth:`finish` reports them."""
        arrays = []
        rows = batch.num_rows
        for col in self.table.columns:
            if col.generated is not None:  # ROW_NUMBER: 1, 2, … across the whole source
                arrays.append(pa.array(range(self.next_row, self.next_row + rows), pa.int64()))
                continue
            out, bad = convert(batch.column(col.name), col.type)
            if bad is not None:
                count = pc.sum(bad).as_py() or 0
                if count:
                    self.failures[col.name] = self.failures.get(col.name, 0) + count
                    index = pc.index(bad, True).as_py()
                    row = first_row + index
                    first = self.first
                    if first is None or (
                        first.file == file and first.row is not None and first.row > row
                    ):
                        self.first = _Failure(col.name, file, row, line_of=line_of)
            arrays.append(out)
        self.next_row += rows
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def add_failures(
        self, column: str, count: int, *, file: str | None, line: int | None, row: int | None
    ) -> None:
        """Failures counted by the source's own reader (e.g. DuckDB's CSV rejects)."""
        if count <= 0:
            return
        self.failures[column] = self.failures.get(column, 0) + count
        if self.first is None:
            self.first = _Failure(column, file, row, line)

    def finish(self) -> None:
        """Raise :class:`TypeConversion` if any value failed to convert."""
        if self.first is None:
            return
        first = self.first
        if first.line is None and first.line_of is not None and first.row is not None:
            first.line = first.line_of(first.row)
        total = sum(self.failures.values())
        ctype = self.table.column(first.column)
        type_name = ctype.type.value if ctype else "declared type"
        raise TypeConversion(
            f"{total} value(s) do not convert to the declared types; the first is not a valid "
            f"{type_name}",
            file=first.file,
            line=first.line,
            row=first.row,
            column=first.column,
            failures=dict(self.failures),
        )
