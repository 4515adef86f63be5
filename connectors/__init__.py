"""Sources to Arrow to workspace: one module per source kind behind one small protocol.

``connect(source)`` gives a :class:`Connector` for a source string; ``ingest`` loads a dataset
version with its quality report. See :mod:`connectors.base` for source strings and options.
"""

from connectors.base import Connector, Progress, SourceSpec, connect, parse_source
from connectors.errors import SourceError
from connectors.quality.html import render_html
from connectors.quality.report import QualityReport
from connectors.quality.rules import QualityRules, load_rules, read_rules

__all__ = [
    "Connector",
    "Progress",
    "QualityReport",
    "QualityRules",
    "SourceError",
    "SourceSpec",
    "connect",
    "load_rules",
    "parse_source",
    "read_rules",
    "render_html",
]
