"""What the client's calls return: plain frozen dataclasses over the server's JSON (nothing
needs pandas), and a query's rows as an Arrow table or a pandas DataFrame.

A query's table is *long*: one row per released group and output, with the group's keys, the
output's name (``output``), and ``value``, ``ci_low``, ``ci_high`` (the 95% interval; all three
null where a cell was suppressed). ``wide=True`` gives one row per group instead, with
``<output>``, ``<output>_ci_low`` and ``<output>_ci_high`` per output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas

__all__ = ["Budget", "Cell", "Dataset", "Preview", "QueryResult"]

Number = int | float
Key = str | int | float | bool | None


@dataclass(frozen=True)
class Cell:
    """A released number and its 95% interval (all ``None`` where it was suppressed)."""

    value: Number | None
    ci_low: Number | None
    ci_high: Number | None


@dataclass(frozen=True)
class Budget:
    """One grant of the caller's tenant: its dataset, what it holds, what is spent and left."""

    dataset: str
    grant: str
    accounting: str
    unit: str
    total: float
    spent: float
    remaining: float
    per_query_cap: float
    summary: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Budget:
        return cls(
            dataset=str(body["dataset"]),
            grant=str(body["grant"]),
            accounting=str(body["accounting"]),
            unit=str(body["unit"]),
            total=float(body["total"]),
            spent=float(body["spent"]),
            remaining=float(body["remaining"]),
            per_query_cap=float(body["per_query_cap"]),
            summary=str(body["summary"]),
            raw=body,
        )


@dataclass(frozen=True)
class Dataset:
    """A dataset of the catalogue: its id, title, active version and tables (``raw`` holds the
    whole document, with the public policy when it came from :meth:`Client.dataset`)."""

    id: str
    zone: str
    title: str
    version: int
    description: str
    tables: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Dataset:
        return cls(
            id=str(body["id"]),
            zone=str(body["zone"]),
            title=str(body["title"]),
            version=int(body["version"]),
            description=str(body["description"]),
            tables=tuple(body["tables"]),
            raw=body,
        )

    def columns(self, table: str) -> list[str]:
        """The columns of ``table`` its public policy shows (from :meth:`Client.dataset`)."""
        for t in self.raw.get("policy", {}).get("tables", []):
            if t["name"] == table:
                return [str(c["name"]) for c in t["columns"]]
        raise KeyError(table)


@dataclass(frozen=True)
class Preview:
    """What a query would cost, and the 95% half-widths to expect, before running it."""

    dataset: str
    version: int
    outputs: tuple[str, ...]
    cost: dict[str, Any]
    expected_ci95_half_width: dict[str, Any]
    budget: Budget
    affordable: bool

    @classmethod
    def of(cls, body: dict[str, Any]) -> Preview:
        return cls(
            dataset=str(body["dataset"]),
            version=int(body["version"]),
            outputs=tuple(str(c["name"]) for c in body["columns"] if c["kind"] != "key"),
            cost=dict(body["cost"]),
            expected_ci95_half_width=dict(body["expected_ci95_half_width"]),
            budget=Budget.of(body["budget"]),
            affordable=bool(body["affordable"]),
        )


@dataclass(frozen=True)
class QueryResult:
    """A query's answer: per released group, its keys and a :class:`Cell` per output.

    ``replayed`` is true when the server answered a retry with the answer it had already given
    (same Idempotency-Key): the query was charged once.
    """

    query_id: str
    dataset: str
    version: int
    keys: tuple[str, ...]
    outputs: tuple[str, ...]
    rows: tuple[tuple[dict[str, Key], dict[str, Cell]], ...]
    suppressed_groups: int
    cost: dict[str, Any]
    budget: Budget
    cached: bool
    replayed: bool = False

    @classmethod
    def of(cls, body: dict[str, Any], replayed: bool = False) -> QueryResult:
        keys = tuple(str(c["name"]) for c in body["columns"] if c["kind"] == "key")
        outputs = tuple(str(c["name"]) for c in body["columns"] if c["kind"] != "key")
        rows = tuple(
            (
                {k: row.get(k) for k in keys},
                {o: _cell(row.get(o)) for o in outputs},
            )
            for row in body["rows"]
        )
        return cls(
            query_id=str(body["query_id"]),
            dataset=str(body["dataset"]),
            version=int(body["version"]),
            keys=keys,
            outputs=outputs,
            rows=rows,
            suppressed_groups=int(body["suppressed_groups"]),
            cost=dict(body["cost"]),
            budget=Budget.of(body["budget"]),
            cached=bool(body["cached"]),
            replayed=replayed,
        )

    def cell(self, output: str, **keys: Key) -> Cell:
        """The cell of ``output`` in the group with these keys (none for an ungrouped query)."""
        for group, cells in self.rows:
            if group == keys:
                return cells[output]
        raise KeyError(keys)

    def to_arrow(self, wide: bool = False) -> pa.Table:
        """The answer as an Arrow table (see the module for the long and wide forms)."""
        columns: dict[str, list[Any]] = {k: [] for k in self.keys}
        if wide:
            for o in self.outputs:
                columns |= {o: [], f"{o}_ci_low": [], f"{o}_ci_high": []}
            for group, cells in self.rows:
                for k in self.keys:
                    columns[k].append(group[k])
                for o in self.outputs:
                    c = cells[o]
                    columns[o].append(c.value)
                    columns[f"{o}_ci_low"].append(c.ci_low)
                    columns[f"{o}_ci_high"].append(c.ci_high)
        else:
            columns |= {"output": [], "value": [], "ci_low": [], "ci_high": []}
            for group, cells in self.rows:
                for o in self.outputs:
                    for k in self.keys:
                        columns[k].append(group[k])
                    c = cells[o]
                    columns["output"].append(o)
                    columns["value"].append(c.value)
                    columns["ci_low"].append(c.ci_low)
                    columns["ci_high"].append(c.ci_high)
        numbers = {n for n in columns if n not in self.keys and n != "output"}
        arrays = {
            n: pa.array(v, type=pa.float64()) if n in numbers else pa.array(v)
            for n, v in columns.items()
        }
        return pa.table(arrays)

    def to_pandas(self, wide: bool = False) -> pandas.DataFrame:
        """The answer as a pandas DataFrame (needs pandas: ``pip install 'veil[client]'``)."""
        try:
            import pandas  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("DataFrames need pandas: pip install 'veil[client]'") from exc
        frame: pandas.DataFrame = self.to_arrow(wide).to_pandas()
        return frame


def _is_cell(value: Any) -> bool:
    return isinstance(value, dict) and "ci95" in value


def _cell(value: Any) -> Cell:
    if not _is_cell(value):
        return Cell(None, None, None)
    low, high = value["ci95"]
    return Cell(value["value"], low, high)
