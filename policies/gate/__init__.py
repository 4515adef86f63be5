"""The SQL gate: parse, check against the allow-list, and plan the bounded SQL and its noise.

The analyst's SQL text never reaches the engine. :func:`parse` turns it into one sqlglot SELECT,
:func:`check` validates that AST against the dataset's policy into a typed :class:`CheckedQuery`
(naming the rule that failed otherwise), and :func:`plan` generates the SQL Veil runs and the noise
plan that prices it.
"""

from policies.gate.check import check
from policies.gate.parse import parse
from policies.gate.plan import plan
from policies.gate.query import (
    AggKind,
    Aggregate,
    CheckedQuery,
    GroupKey,
    OrderItem,
    Ref,
    Transform,
)

__all__ = [
    "AggKind",
    "Aggregate",
    "CheckedQuery",
    "GroupKey",
    "OrderItem",
    "Ref",
    "Transform",
    "check",
    "parse",
    "plan",
]
