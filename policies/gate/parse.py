"""Parse analyst SQL into exactly one sqlglot SELECT, or refuse with a stable rule code.

The text's size is checked first (:mod:`policies.gate.limits`), so nothing long or deeply nested
reaches the parser."""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from policies.errors import QueryRejected, SqlTooDeep
from policies.gate.limits import DEFAULT, MAX_EXPRESSION_DEPTH, SqlLimits, check_size


def parse(sql: str, limits: SqlLimits = DEFAULT) -> exp.Select:
    """The single SELECT in ``sql``; anything else is a :class:`QueryRejected`."""
    if not sql.strip():
        raise QueryRejected("syntax_error", "", "empty query")
    check_size(sql, limits)
    if "\x00" in sql:
        raise QueryRejected("syntax_error", "", "NUL character")
    if not sql.isascii():
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. from undecodable bytes) would pass the gate inside a literal
            # and fail only in the engine, after the charge.
            raise QueryRejected("syntax_error", "", "the SQL is not valid Unicode text") from None
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except RecursionError:
        raise SqlTooDeep(MAX_EXPRESSION_DEPTH, "expressions") from None
    except (ParseError, TokenError, Exception):
        # sqlglot raises more than its own errors on hostile input; all of them mean "not SQL
        # we understand", and none of their messages is returned.
        raise QueryRejected("syntax_error", "", "the SQL could not be parsed") from None
    if len(statements) != 1:
        if not statements:
            raise QueryRejected("syntax_error", "", "empty query")
        raise QueryRejected("multiple_statements", "", "send exactly one SELECT statement")
    (statement,) = statements
    if not isinstance(statement, exp.Select):
        kind = type(statement).__name__.lower()
        raise QueryRejected("not_select", kind, "only SELECT statements are allowed")
    if _depth(statement) > MAX_EXPRESSION_DEPTH:
        raise SqlTooDeep(MAX_EXPRESSION_DEPTH, "expressions")
    return statement


def _depth(node: exp.Expression) -> int:
    deepest = 0
    stack: list[tuple[exp.Expression, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_EXPRESSION_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in current.iter_expressions())
    return deepest
