"""Errors of data onboarding: the ``SourceError`` family of the one exception tree.

Each names where the problem is — ``file`` (a path or object URL), ``line`` (physical line, 1-based,
header included), ``row`` (data record, 1-based, within that file), ``column`` — whenever that is
known, as message text and as problem extension members. Messages never carry data values: only
file names, line and row numbers, column names, type names and counts. A failed load's error
carries its quality report (:mod:`connectors.quality.report`, a model that imports nothing else
of ``connectors``, so every module can import this one).
"""

from __future__ import annotations

from typing import Any, ClassVar

from connectors.quality.report import QualityReport
from policies.errors import VeilError

__all__ = [
    "EmptySource",
    "InvalidEncoding",
    "InvalidSource",
    "MalformedCsv",
    "MalformedFile",
    "MalformedJson",
    "MissingUnitColumn",
    "NotReadOnly",
    "QualityRuleFailed",
    "QueryFailed",
    "SchemaMismatch",
    "SourceError",
    "SourceNotFound",
    "SourceTooLarge",
    "SourceUnreachable",
    "TypeConversion",
]


class SourceError(VeilError):
    """A source that cannot be loaded. Nothing of it is loaded."""

    code: ClassVar[str] = "source_error"
    status = 422
    title: ClassVar[str] = "Source could not be loaded"

    def __init__(
        self,
        detail: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        **extra: Any,
    ) -> None:
        where = [
            part
            for part in (
                file,
                f"line {line}" if line is not None else None,
                f"row {row}" if row is not None and line is None else None,
                f"column {column}" if column is not None else None,
            )
            if part
        ]
        text = f"{': '.join(where)}: {detail}" if where else detail
        located = {
            key: value
            for key, value in (("file", file), ("line", line), ("row", row), ("column", column))
            if value is not None
        }
        super().__init__(text, **located, **extra)
        self.file = file
        self.line = line
        self.row = row
        self.column = column
        self.report: QualityReport | None = None
        """The quality report of the failed load, attached by :func:`connectors.load.ingest`."""


class InvalidSource(SourceError):
    """A source string, URL or option that is not understood."""

    code = "invalid_source"
    title = "Invalid source"


class SourceUnreachable(SourceError):
    code = "source_unreachable"
    status = 502
    title = "Source unreachable"


class SourceNotFound(SourceError):
    code = "source_not_found"
    title = "Source not found"


class EmptySource(SourceError):
    code = "empty_source"
    title = "Empty source"


class MalformedCsv(SourceError):
    """Wrong number of fields, bad quoting, an over-long line."""

    code = "malformed_csv"
    title = "Malformed CSV"


class MalformedJson(SourceError):
    code = "malformed_json"
    title = "Malformed JSON lines"


class MalformedFile(SourceError):
    """A Parquet or Arrow IPC file that cannot be read."""

    code = "malformed_file"
    title = "Malformed file"


class InvalidEncoding(SourceError):
    code = "invalid_encoding"
    title = "Invalid text encoding"


class SchemaMismatch(SourceError):
    """The source's columns or types do not match the policy (or the other files of a glob)."""

    code = "schema_mismatch"
    title = "Source does not match the policy"


class MissingUnitColumn(SchemaMismatch):
    code = "missing_unit_column"
    title = "Privacy unit column missing"


class TypeConversion(SourceError):
    """Values that do not convert to the declared column type.

    ``failures`` (an extension member) counts the failures per column over the whole source; the
    location fields name the first one.
    """

    code = "type_conversion"
    title = "Values of the wrong type"


class NotReadOnly(SourceError):
    code = "not_read_only"
    title = "Query is not read-only"


class QueryFailed(SourceError):
    """The database refused or aborted the query; ``sqlstate`` says why, never its message."""

    code = "query_failed"
    title = "Source query failed"


class SourceTooLarge(SourceError):
    code = "source_too_large"
    title = "Source larger than the disk quota"


class QualityRuleFailed(SourceError):
    """A quality rule of the policy failed; ``report`` says which, and by how much."""

    code = "quality_rule_failed"
    title = "Quality rule failed"
