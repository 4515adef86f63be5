"""Bands: group keys that bin a number or date column into keys the query itself declares.

``CASE WHEN x < c1 THEN 'a' WHEN x < c2 THEN 'b' ELSE 'c' END`` (every WHEN the same column, the
same operator ``<`` or ``<=``, literal cut points that strictly increase, distinct literal labels
of one kind, an ELSE) and ``width_bucket(x, lo, hi, n)`` (literal bounds with lo < hi, a whole
number of buckets). The labels, or the bucket numbers 0 to n + 1, are the band's public keys:
every release lists all of them, whatever the data holds, so a band may group by a measure.

Every refusal of a band's shape is ``invalid_band`` with a fixed subject naming the part that is
wrong (``case``, ``condition``, ``cut_point``, ``cut_points``, ``label``, ``labels``, ``else``,
``bands``, ``bounds``, ``buckets``, ``width_bucket``), never a literal of the query.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

from sqlglot import exp

from policies.errors import QueryRejected
from policies.gate.nodes import is_literal, literal_value
from policies.gate.query import Band, BandKind
from policies.model import ColumnType, KeyValue

MAX_BANDS: Final = 100
"""Most bands of one CASE (its WHENs and its ELSE), and most buckets of one width_bucket."""

BAND_NODES: Final = (exp.Case, exp.WidthBucket)

MakeBand = Callable[[ColumnType], Band]


def _refuse(part: str, message: str) -> QueryRejected:
    return QueryRejected("invalid_band", part, message)


def band_of(node: exp.Expression) -> tuple[list[exp.Column], MakeBand]:
    """The column a band reads (as each WHEN names it: the caller checks they are one column),
    and how to build the band once the column's type is known."""
    if isinstance(node, exp.WidthBucket):
        return _width_bucket(node)
    assert isinstance(node, exp.Case)
    return _case(node)


def _case(node: exp.Case) -> tuple[list[exp.Column], MakeBand]:
    if node.this is not None:
        raise _refuse("case", "write CASE WHEN col < cut THEN label ... ELSE label END")
    if any(inner is not node for inner in node.find_all(*BAND_NODES)):
        raise _refuse("case", "a band cannot hold another CASE or width_bucket")
    ifs = node.args.get("ifs") or []
    default = node.args.get("default")
    if default is None:
        raise _refuse("else", "a band needs an ELSE label, which takes every other row")
    if len(ifs) + 1 > MAX_BANDS:
        raise _refuse("bands", f"at most {MAX_BANDS} bands")
    ops = {type(when.this) for when in ifs}
    if not ops <= {exp.LT, exp.LTE} or len(ops) != 1:
        raise _refuse("condition", "every WHEN is col < cut, or every WHEN col <= cut")
    columns = [when.this.this for when in ifs]
    if not all(isinstance(c, exp.Column) for c in columns):
        raise _refuse("condition", "every WHEN compares the same column with a cut point")
    first = columns[0]
    cut_nodes = [when.this.expression for when in ifs]
    if not all(is_literal(c) for c in cut_nodes):
        raise _refuse("cut_point", "cut points are literals")
    label_nodes = [when.args.get("true") for when in ifs] + [default]
    labels = tuple(_label(n) for n in label_nodes)
    if len({type(v) for v in labels}) != 1:
        raise _refuse("labels", "the labels are all strings or all whole numbers")
    if len(set(labels)) != len(labels):
        raise _refuse("labels", "each band has its own label")
    inclusive = ops == {exp.LTE}

    def make(column_type: ColumnType) -> Band:
        if not (column_type.numeric or column_type == ColumnType.DATE):
            raise QueryRejected("type_mismatch", first.name, "a band needs a number or a date")
        cuts = tuple(literal_value(c, column_type) for c in cut_nodes)
        if any(not _less(a, b) for a, b in itertools.pairwise(cuts)):
            raise _refuse("cut_points", "the cut points strictly increase")
        return Band(BandKind.CASE, cuts, labels, inclusive)

    return columns, make


def _label(node: exp.Expression | None) -> KeyValue:
    if isinstance(node, BAND_NODES):
        raise _refuse("case", "a band cannot hold another CASE or width_bucket")
    if node is None or not is_literal(node) or isinstance(node, exp.Boolean | exp.Cast):
        raise _refuse("label", "a label is a string or a whole-number literal")
    if isinstance(node, exp.Literal) and node.is_string:
        return literal_value(node, ColumnType.STRING)
    value = literal_value(node, ColumnType.INTEGER)
    if not isinstance(value, int):
        raise _refuse("label", "a label is a string or a whole-number literal")
    return value


def _less(a: KeyValue, b: KeyValue) -> bool:
    return a < b  # type: ignore[operator]  # both typed by the same column


def _width_bucket(node: exp.WidthBucket) -> tuple[list[exp.Column], MakeBand]:
    extra = [k for k, v in node.args.items() if v and k not in _WIDTH_BUCKET_ARGS]
    if extra:
        raise _refuse("width_bucket", "width_bucket(col, lo, hi, n)")
    column = node.this
    if any(n.find(*BAND_NODES) is not None for n in node.iter_expressions()):
        raise _refuse("case", "a band cannot hold another CASE or width_bucket")
    if not isinstance(column, exp.Column):
        raise _refuse("condition", "width_bucket bins a bare column")
    low, high, count = (node.args.get(k) for k in ("min_value", "max_value", "num_buckets"))
    if low is None or high is None or count is None:
        raise _refuse("width_bucket", "width_bucket(col, lo, hi, n)")
    if not (_number(low) and _number(high)):
        raise _refuse("bounds", "the bounds are number literals")
    lo = literal_value(low, ColumnType.FLOAT)
    hi = literal_value(high, ColumnType.FLOAT)
    if not _less(lo, hi):
        raise _refuse("bounds", "the lower bound is below the upper bound")
    if not (isinstance(count, exp.Literal) and not count.is_string and count.this.isdigit()):
        raise _refuse("buckets", "the number of buckets is a whole-number literal")
    if not 1 <= int(count.this) <= MAX_BANDS:
        raise _refuse("buckets", f"1 to {MAX_BANDS} buckets")
    labels = tuple(range(int(count.this) + 2))

    def make(column_type: ColumnType) -> Band:
        if not column_type.numeric:
            raise QueryRejected("type_mismatch", column.name, "width_bucket needs a number")
        return Band(BandKind.WIDTH_BUCKET, (lo, hi), labels)

    return [column], make


_WIDTH_BUCKET_ARGS = {"this", "min_value", "max_value", "num_buckets"}


def _number(node: exp.Expression) -> bool:
    return is_literal(node) and not (
        isinstance(node, exp.Boolean | exp.Cast)
        or (isinstance(node, exp.Literal) and node.is_string)
    )
