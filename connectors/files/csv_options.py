"""The options of a CSV source: its dialect, encoding, header and null values.

``delimiter`` (one character, or ``tab``/``comma``/``semicolon``/``pipe``), ``quote`` (one
character, or ``none``), ``escape`` (default: the quote, i.e. ``""`` inside quotes), ``encoding``
(default ``utf-8``; a BOM is skipped), ``header`` (default ``true``), ``skip_rows`` (lines before
the header), ``columns`` (comma-separated names when ``header=false``; default: the policy's
order), ``null_values`` (comma-separated; default: the empty field). They are checked when the
connector is made, before any file is opened.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from connectors.errors import InvalidSource
from connectors.source import option_bool, option_int

__all__ = ["CSV_OPTIONS", "CsvOptions"]

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
_NAMED_DELIMITERS: Final = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass(frozen=True)
class CsvOptions:
    """A CSV source's dialect and layout, parsed and checked from its source options."""

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
