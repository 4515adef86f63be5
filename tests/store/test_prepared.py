"""``statements.Prepared`` reads and writes exactly what ``Connection.execute`` does, on both
backends: list parameters of any length, date-times on the way in and out, computed booleans,
literals compiled into the statement, NULLs and row counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from sandbox.store.schema import tenants
from sandbox.store.statements import Prepared
from tests.support.store import connect_store

MOMENT = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
IDS = [f"t{i}" for i in range(12)]

_t = tenants.c
READ = select(
    _t.id,
    _t.name,
    _t.created_at,
    (_t.created_at > bindparam("at")).label("later"),
    func.coalesce(func.length(_t.name), 0).label("length"),
).where(_t.id.in_(bindparam("ids", expanding=True)), _t.kind != "none")
COUNT = select(func.count()).select_from(
    select(_t.id).where(_t.created_at <= bindparam("at")).limit(bindparam("cap")).subquery()
)
RENAME = (
    update(tenants).where(_t.id.in_(bindparam("ids", expanding=True))).values(name=bindparam("new"))
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    created=st.lists(MOMENT, min_size=len(IDS), max_size=len(IDS)),
    asked=st.lists(st.sampled_from([*IDS, "missing"]), min_size=1, max_size=15),
    at=MOMENT,
    cap=st.integers(min_value=0, max_value=20),
)
def test_prepared_statements_match_connection_execute(
    state_url: str, created: list[datetime], asked: list[str], at: datetime, cap: int
) -> None:
    engine = connect_store(state_url)
    read, count, rename = Prepared(READ), Prepared(COUNT), Prepared(RENAME)
    try:
        with engine.begin() as con:
            con.execute(tenants.delete())
            rows = [
                {"id": i, "name": i * (n % 3), "kind": "bank", "purpose_class": "commercial",
                 "created_at": c}
                for n, (i, c) in enumerate(zip(IDS, created, strict=True))
            ]  # fmt: skip
            con.execute(tenants.insert(), rows)
        with engine.begin() as con:
            params = {"ids": asked, "at": at}
            fast = sorted(tuple(r) for r in read.execute(con, params))
            slow = sorted(tuple(r) for r in con.execute(READ, params))
            assert fast == slow
            assert [r._asdict() for r in read.execute(con, params)] == [
                r._asdict() for r in con.execute(READ, params)
            ]
            assert (
                count.execute(con, {"at": at, "cap": cap}).scalar_one()
                == con.execute(COUNT, {"at": at, "cap": cap}).scalar_one()
            )
            before = con.execute(select(tenants).order_by(_t.id)).all()
            changed = rename.execute(con, {"ids": asked, "new": "renamed"}).rowcount
            after_fast = con.execute(select(tenants).order_by(_t.id)).all()
            assert changed == len(set(asked) - {"missing"})
        with engine.begin() as con:  # the same update through SQLAlchemy, from the same rows
            con.execute(tenants.delete())
            con.execute(tenants.insert(), [r._asdict() for r in before])
            assert con.execute(RENAME, {"ids": asked, "new": "renamed"}).rowcount == changed
            assert con.execute(select(tenants).order_by(_t.id)).all() == after_fast
    finally:
        engine.dispose()


def test_driver_errors_come_out_as_sqlalchemy_errors(state_url: str) -> None:
    """Callers that catch ``IntegrityError`` see the same exception either way."""
    engine = connect_store(state_url)
    insert = Prepared(tenants.insert())
    row = {"id": "dup", "name": "a", "kind": "bank", "purpose_class": "commercial",
           "created_at": datetime(2026, 1, 1, tzinfo=UTC)}  # fmt: skip
    try:
        with engine.begin() as con:
            con.execute(tenants.delete())
            insert.execute(con, row)
        with pytest.raises(IntegrityError), engine.begin() as con:
            insert.execute(con, row)
    finally:
        engine.dispose()
