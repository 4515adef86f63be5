"""Source strings: what names a source, the options it carries, and how they are checked.

A source is named by a string — a path or glob (``data/tax-*.csv``), a ``file://`` URL with
options in its query (``file:///data/*.csv?delimiter=;&encoding=gbk&header=true``), an
``s3://bucket/key?endpoint_url=…`` URL, or a ``postgresql://…?table=t`` / ``?query=SELECT…`` URL —
parsed into a :class:`SourceSpec` of a kind (a file format or ``postgresql``), a location and
options. ``{table}`` in a location (or in ``table=``) stands for the policy table's name, so one
source string can serve a dataset of several tables (``data/{table}.parquet``). Which connector
serves a spec is :func:`connectors.connect.connect`'s business; the option helpers here check the
values each connector accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from connectors.errors import InvalidSource

__all__ = [
    "FILE_KINDS",
    "KINDS",
    "SourceSpec",
    "check_options",
    "option_bool",
    "option_int",
    "parse_source",
    "redact_url",
]

FILE_KINDS: Final = ("csv", "parquet", "jsonl", "ipc")
KINDS: Final = (*FILE_KINDS, "postgresql")

_EXTENSIONS: Final[Mapping[str, str]] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "ipc",
    ".arrows": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
}


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string: its kind (file format or ``postgresql``), where, and options."""

    kind: str
    location: str
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidSource(
                f"unknown source kind {self.kind[:40]!r}; one of {', '.join(KINDS)}"
            )

    @property
    def has_placeholder(self) -> bool:
        return "{table}" in self.location or "{table}" in self.options.get("table", "")

    def for_table(self, name: str) -> SourceSpec:
        """This spec with ``{table}`` replaced by ``name`` (a policy identifier)."""
        options = {k: v.replace("{table}", name) for k, v in self.options.items()}
        return SourceSpec(self.kind, self.location.replace("{table}", name), options)

    @property
    def name(self) -> str:
        """The location without credentials."""
        return redact_url(self.location)


def redact_url(location: str) -> str:
    """``location`` with any password (and query string) removed."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}" if user else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _kind_from_path(path: str, explicit: str | None) -> str:
    if explicit:
        kind = {"json": "jsonl", "ndjson": "jsonl", "arrow": "ipc", "feather": "ipc"}.get(
            explicit, explicit
        )
        if kind not in FILE_KINDS:
            raise InvalidSource(f"unknown file format; one of {', '.join(FILE_KINDS)}")
        return kind
    lowered = path.lower()
    for ext, kind in _EXTENSIONS.items():
        if lowered.endswith(ext):
            return kind
    raise InvalidSource(
        "cannot tell the file format from the name; add format=csv|parquet|jsonl|ipc",
        file=path,
    )


def parse_source(text: str, options: Mapping[str, str] | None = None) -> SourceSpec:
    """Parse a source string. ``options`` (e.g. CLI flags) override those in a URL's query.

    Plain paths are taken literally (``?`` is a glob character there); URLs carry options in
    their query string. A ``.tsv`` file defaults to a tab delimiter.
    """
    extra = dict(options or {})
    if not text:
        raise InvalidSource("the source is empty")
    if "://" not in text:
        kind = _kind_from_path(text, extra.pop("format", None))
        if text.lower().endswith(".tsv"):
            extra.setdefault("delimiter", "\t")
        return SourceSpec(kind, text, extra)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(extra)
    if scheme in ("postgresql", "postgres"):
        return SourceSpec(
            "postgresql", urlunsplit((scheme, parts.netloc, parts.path, "", "")), query
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSource("file:// URLs name local paths only (file:///path)")
        path = unquote(parts.path)
        kind = _kind_from_path(path, query.pop("format", None))
        if path.lower().endswith(".tsv"):
            query.setdefault("delimiter", "\t")
        return SourceSpec(kind, path, query)
    if scheme == "s3":
        if not parts.netloc:
            raise InvalidSource("an s3:// URL names a bucket: s3://bucket/key")
        location = f"s3://{parts.netloc}{unquote(parts.path)}"
        kind = _kind_from_path(location, query.pop("format", None))
        if location.lower().endswith(".tsv"):
            query.setdefault("delimiter", "\t")
        return SourceSpec(kind, location, query)
    raise InvalidSource(
        f"unsupported source scheme {scheme[:20]!r}; use a path, file://, s3:// or postgresql://"
    )


_BOOL_TEXT: Final = {"true": True, "1": True, "yes": True, "on": True}
_BOOL_TEXT_FALSE: Final = {"false", "0", "no", "off"}


def option_bool(options: Mapping[str, str], key: str, default: bool) -> bool:
    if key not in options:
        return default
    value = options[key].strip().lower()
    if value in _BOOL_TEXT:
        return True
    if value in _BOOL_TEXT_FALSE:
        return False
    raise InvalidSource(f"option {key} is true or false")


def option_int(options: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    if key not in options:
        return default
    text = options[key].strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
        raise InvalidSource(f"option {key} is an integer of at least {minimum}")
    return int(text)


def check_options(options: Mapping[str, str], allowed: Iterable[str], kind: str) -> None:
    allowed = set(allowed)
    for key in options:
        if key not in allowed:
            raise InvalidSource(
                f"unknown option {key[:40]!r} for a {kind} source; allowed: "
                f"{', '.join(sorted(allowed))}"
            )
