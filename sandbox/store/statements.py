"""Hot statements run on the driver's own cursor, with SQLAlchemy's compiled SQL and type
processing but without its per-execution machinery.

Every verification answer runs about a dozen small statements on the state store. Through
``Connection.execute`` each costs 40–90 µs of SQLAlchemy (cache-key generation, parameter
construction and expansion, the result object) around a few microseconds of SQLite. A
:class:`Prepared` statement is compiled by SQLAlchemy once per dialect and per shape of its list
parameters (``bindparam(..., expanding=True)``: one SQL text per list length), and then each
execution only:

- orders the values as the compiled SQL wants them (positional for SQLite, named for psycopg),
  each list parameter spread over its expanded names;
- passes every value through its type's bind processor (``DateTime`` on SQLite), and every
  result column through its type's result processor — the processors ``Connection.execute``
  applies, so the same values go in and come out (a test compares both ways on SQLite and
  PostgreSQL);
- runs it on the DB-API cursor of the connection's current transaction.

A driver error comes out wrapped the way ``Connection.execute`` wraps it (``IntegrityError``,
``OperationalError``, …, without the parameters). No SQLAlchemy statement events fire: use it
for statements nothing listens to.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import Select

_MAX_PLANS: Final = 64  # shapes kept per statement (list lengths vary by batch chunk)

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    sql: str
    order: tuple[str, ...] | None  # positional paramstyles: the names in placeholder order
    expansion: Mapping[str, Sequence[str]]  # list parameter -> its expanded names
    constants: Mapping[str, Any]  # values compiled into the statement (literals)
    processors: Mapping[str, Processor]
    row: Callable[..., Any] | None  # a SELECT's row type
    results: tuple[Processor | None, ...]


class Rows:
    """The rows of one execution (a list, read by attribute like SQLAlchemy's rows)."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected exactly one row, got {len(self._rows)}")
        return self._rows[0][0]


class Prepared:
    """One Core statement (see the module docstring). Thread-safe; share it module-wide."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, tuple[int, ...]], _Plan] = {}
        self._lists: dict[str, frozenset[str]] = {}  # dialect -> names of list parameters
        self._lock = threading.Lock()

    def execute(self, con: Connection, params: Mapping[str, Any] | None = None) -> Rows:
        """Run the statement with ``params`` in ``con``'s current transaction."""
        params = params or {}
        dialect = con.dialect
        lists = self._lists.get(dialect.name)
        if lists is None:
            lists = self._list_names(dialect)
        shape = tuple(len(params[name]) for name in sorted(lists))
        plan = self._plans.get((dialect.name, shape))
        if plan is None:
            plan = self._plan(dialect, params, shape)
        values = dict(plan.constants)
        for name, value in params.items():
            expanded = plan.expansion.get(name)
            if expanded is None:
                values[name] = value
            else:
                values.update(zip(expanded, value, strict=True))
        for name, processor in plan.processors.items():
            if name in values:
                values[name] = processor(values[name])
        args: Sequence[Any] | Mapping[str, Any] = (
            tuple(values[name] for name in plan.order) if plan.order is not None else values
        )
        cursor = con.connection.cursor()
        try:
            try:
                cursor.execute(plan.sql, args)
            except dialect.loaded_dbapi.Error as exc:  # as Connection.execute raises it
                raise DBAPIError.instance(
                    plan.sql, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
                ) from exc
            rows: list[Any] = []
            if plan.row is not None:
                make, results = plan.row, plan.results
                for raw in cursor.fetchall():
                    rows.append(
                        make(*(v if p is None else p(v) for v, p in zip(raw, results, strict=True)))
                    )
            return Rows(rows, cursor.rowcount)
        finally:
            cursor.close()

    def _list_names(self, dialect: Dialect) -> frozenset[str]:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
        names = frozenset(name for name, bind in compiled.binds.items() if bind.expanding)
        self._lists[dialect.name] = names
        return names

    def _plan(self, dialect: Dialect, params: Mapping[str, Any], shape: tuple[int, ...]) -> _Plan:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
        state = compiled.construct_expanded_state(dict(params))
        expansion = {k: tuple(v) for k, v in state.parameter_expansion.items()}
        given = set(params) | {name for names in expansion.values() for name in names}
        constants = {k: v for k, v in state.parameters.items() if k not in given}
        row: Callable[..., Any] | None = None
        results: tuple[Processor | None, ...] = ()
        if isinstance(self.statement, Select):
            columns = list(self.statement.selected_columns)
            row = _row_type([c.key or f"c{i}" for i, c in enumerate(columns)])
            results = tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            )
        plan = _Plan(
            sql=state.statement,
            order=tuple(state.positiontup) if state.positiontup is not None else None,
            expansion=expansion,
            constants=constants,
            processors=_processors(compiled, dialect, expansion),
            row=row,
            results=results,
        )
        with self._lock:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[(dialect.name, shape)] = plan
        return plan


def _row_type(names: list[str]) -> Callable[..., Any]:
    """A row class read by attribute (``rename``: names that are not identifiers become
    positional names)."""
    return namedtuple("Row", names, rename=True)


def _processors(
    compiled: SQLCompiler, dialect: Dialect, expansion: Mapping[str, Sequence[str]]
) -> dict[str, Processor]:
    """Each parameter's bind processor (a list parameter's applies to each of its elements)."""
    found: dict[str, Processor] = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            for each in expansion.get(name, (name,)):
                found[each] = processor
    return found
