"""The size limits of a query's SQL text: its length and its nesting, checked before parsing.

One check with one pair of codes, whoever calls the gate: ``sql_too_long`` (more characters than
``max_chars``) and ``sql_too_deep`` (brackets nested deeper than ``max_depth``, or expressions
nested deeper than :data:`MAX_EXPRESSION_DEPTH` with or without brackets — that one only the
parser can see). The server takes both limits from its settings (``VEIL_MAX_SQL_CHARS``,
``VEIL_MAX_SQL_DEPTH``); :data:`DEFAULT` is what a direct caller of the gate gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from policies.errors import SqlTooDeep, SqlTooLong

MAX_SQL_CHARS: Final = 10_000
"""The gate's own cap on the length of SQL text: a configured limit may lower it, never raise it."""
MAX_EXPRESSION_DEPTH: Final = 64
"""Deepest nesting of a parsed query's expressions (``NOT NOT …``, ``a OR b OR …`` nest too)."""

OPENING: Final = frozenset("([{")
_NOT_BRACKET: Final = re.compile(r"[^()\[\]{}]+")


@dataclass(frozen=True)
class SqlLimits:
    max_chars: int = MAX_SQL_CHARS
    max_depth: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.max_chars <= MAX_SQL_CHARS or self.max_depth < 1:
            raise ValueError(f"max_chars is 1 to {MAX_SQL_CHARS}; max_depth is at least 1")


DEFAULT: Final = SqlLimits()


def bracket_depth(sql: str) -> int:
    """The deepest nesting of ``(``, ``[`` and ``{`` in ``sql``, string literals included.

    Counting inside literals too over-counts at worst (a literal full of brackets), never
    under-counts, whatever quoting rules the parser applies; closing brackets never go below 0.
    """
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", sql):
        if char in OPENING:
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def check_size(sql: str, limits: SqlLimits = DEFAULT) -> None:
    """Refuse SQL text over the length or bracket-nesting limit, before anything parses it."""
    if len(sql) > limits.max_chars:
        raise SqlTooLong(limits.max_chars)
    # cheap first: no more opening brackets than the limit cannot nest deeper than it
    if sum(map(sql.count, OPENING)) > limits.max_depth and bracket_depth(sql) > limits.max_depth:
        raise SqlTooDeep(limits.max_depth, "brackets")
