"""Which connector serves a source: the one module that knows every connector class.

Every connector is built from a :class:`~connectors.source.SourceSpec`, so the dispatch lives
apart from the spec (importing the connectors from :mod:`connectors.source` would make a cycle).
"""

from __future__ import annotations

from connectors.base import Connector
from connectors.files.connector import FileConnector
from connectors.postgres import PostgresConnector
from connectors.s3 import S3Connector
from connectors.source import SourceSpec, parse_source

__all__ = ["connect"]


def connect(source: SourceSpec | str, **options: str) -> Connector:
    """The connector for ``source`` (a spec, or a string for :func:`parse_source`)."""
    spec = parse_source(source, options) if isinstance(source, str) else source
    if options and not isinstance(source, str):
        spec = SourceSpec(spec.kind, spec.location, {**spec.options, **options})
    if spec.kind == "postgresql":
        return PostgresConnector(spec)
    if spec.location.startswith("s3://"):
        return S3Connector(spec)
    return FileConnector(spec)
