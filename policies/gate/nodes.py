"""One sqlglot node at a time: the checker's reads that need no state besides the node.

A literal's Python value (typed by the column it is compared with), a quantile level, a
function's DuckDB name, an output's default label, and the rejection for a node the allow-list
does not know. Each failure is a :class:`~policies.errors.QueryRejected` naming the rule, as in
:mod:`policies.gate.check`, which walks the query and calls these.
"""

from __future__ import annotations

import re
from datetime import date

from sqlglot import exp

from policies.errors import QueryRejected
from policies.gate.query import Transform
from policies.model import ColumnType, KeyValue

MAX_LITERAL_CHARS = 1_000

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def func_name(node: exp.Expression) -> str:
    """The function's DuckDB name (``list``, not ``array_agg``) — never text from the query."""
    if isinstance(node, exp.Anonymous):
        name = str(node.name)
        return name.lower() if _NAME.match(name) else "function"
    try:
        head = node.sql(dialect="duckdb").split("(", 1)
    except Exception:
        return node.key
    if len(head) == 2 and _NAME.match(head[0].strip()):
        return head[0].strip().lower()
    return node.key


def unsupported(node: exp.Expression) -> QueryRejected:
    """The rejection for a node the allow-list does not take, named by what it is."""
    if isinstance(node, exp.Subquery | exp.Select | exp.Union | exp.Exists):
        return QueryRejected("unsupported_clause", "subquery")
    if isinstance(node, exp.Window):
        return QueryRejected("unsupported_clause", "window")
    if isinstance(node, exp.Func):
        return QueryRejected("unsupported_function", func_name(node))
    return QueryRejected("unsupported_expression", type(node).__name__.lower())


_AGG_ARGS = {"this", "expression", "big_int"}


def no_extra_arguments(node: exp.Expression) -> None:
    """Aggregates take exactly the arguments the allow-list knows; sqlglot keeps extras aside."""
    extra = [k for k, v in node.args.items() if v and k not in _AGG_ARGS]
    if extra or (node.args.get("expression") and not isinstance(node, exp.PercentileCont)):
        raise QueryRejected("aggregate_argument", func_name(node), "unexpected arguments")


def key_label(column: str, transform: Transform) -> str:
    """The default output name of a group key: ``month``, or ``year_month`` for ``year(month)``."""
    return column if transform == Transform.NONE else f"{transform.value}_{column}"


def column_label(node: exp.Expression) -> str:
    """The name of the column a node reads (``""`` when none), to name it in a rejection."""
    column = node if isinstance(node, exp.Column) else node.find(exp.Column)
    return column.name if column is not None else ""


def is_literal(node: exp.Expression) -> bool:
    """A number, a negated number, a string, a boolean or a string cast (``CAST('...' AS t)``)."""
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    if isinstance(node, exp.Cast):
        return isinstance(node.this, exp.Literal) and node.this.is_string
    return isinstance(node, exp.Literal | exp.Boolean)


def literal_value(node: exp.Expression, expect: ColumnType) -> KeyValue:
    """The Python value of a literal, checked against the column type it is compared with."""
    if not is_literal(node):
        raise unsupported(node)
    if isinstance(node, exp.Boolean):
        if expect != ColumnType.BOOLEAN:
            raise QueryRejected("type_mismatch", "literal", f"expected {expect.value}")
        return bool(node.this)
    negative = isinstance(node, exp.Neg)
    if isinstance(node, exp.Cast):
        target = node.args["to"].this
        if target != exp.DataType.Type.DATE or expect != ColumnType.DATE:
            raise QueryRejected("type_mismatch", "literal", f"expected {expect.value}")
        return _date(node.this.this)
    literal = node.this if negative else node
    assert isinstance(literal, exp.Literal)
    text = str(literal.this)
    if literal.is_string:
        if len(text) > MAX_LITERAL_CHARS:
            raise QueryRejected("invalid_literal", "string", f"at most {MAX_LITERAL_CHARS} chars")
        if expect == ColumnType.DATE:
            return _date(text)
        if expect != ColumnType.STRING:
            raise QueryRejected("type_mismatch", "literal", f"expected {expect.value}")
        return text
    if not expect.numeric:
        raise QueryRejected("type_mismatch", "literal", f"expected {expect.value}")
    if len(text) > 40:
        raise QueryRejected("invalid_literal", "number", "too long")
    try:
        number: int | float = int(text) if text.isdigit() else float(text)
    except ValueError:
        raise QueryRejected("invalid_literal", "number") from None
    if (isinstance(number, float) and number != number) or number in (float("inf"), float("-inf")):
        raise QueryRejected("invalid_literal", "number", "must be finite")
    if isinstance(number, int) and number > 2**63 - 1:
        raise QueryRejected("invalid_literal", "number", "out of range")
    return -number if negative else number


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QueryRejected("invalid_literal", "date", "dates are ISO 8601 (YYYY-MM-DD)") from None


def quantile_level(node: exp.Expression | None) -> float:
    """The level of a quantile aggregate: a number literal strictly between 0 and 1."""
    if not (isinstance(node, exp.Literal) and not node.is_string):
        raise QueryRejected("invalid_quantile", "", "the level is a number literal in (0, 1)")
    try:
        q = float(node.this)
    except ValueError:
        raise QueryRejected("invalid_quantile", "") from None
    if not 0.0 < q < 1.0:
        raise QueryRejected("invalid_quantile", "", "the level must lie strictly between 0 and 1")
    return q
