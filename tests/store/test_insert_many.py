"""``db.insert_many`` stores exactly what SQLAlchemy's own insert stores, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sandbox.store import db
from sandbox.store.schema import tenants
from tests.support.store import connect_store

ROW = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
        "kind": st.sampled_from(["bank", "research"]),
        "purpose_class": st.sampled_from(["commercial", "public_welfare"]),
        "created_at": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(ROW, min_size=1, max_size=20))
def test_insert_many_stores_what_the_orm_insert_stores(state_url: str, rows: list[dict]) -> None:
    engine = connect_store(state_url)
    try:
        with engine.begin() as con:
            con.execute(tenants.delete())
            fast = [{"id": f"f{i}", **row} for i, row in enumerate(rows)]
            slow = [{"id": f"s{i}", **row} for i, row in enumerate(rows)]
            db.insert_many(con, tenants, fast)
            con.execute(tenants.insert(), slow)
        with engine.connect() as con:
            stored = {r.id: r._asdict() for r in con.execute(select(tenants))}
        for i in range(len(rows)):
            a, b = stored[f"f{i}"], stored[f"s{i}"]
            assert {**a, "id": None} == {**b, "id": None}
    finally:
        engine.dispose()


def test_insert_many_refuses_rows_with_other_columns(state_url: str) -> None:
    engine = connect_store(state_url)
    at = datetime.now(UTC) - timedelta(days=1)
    row = {"id": "t1", "name": "a", "kind": "bank", "purpose_class": "commercial", "created_at": at}
    try:
        with engine.begin() as con, pytest.raises(ValueError, match="same columns"):
            db.insert_many(con, tenants, [row, {"id": "t2", "name": "b"}])
    finally:
        engine.dispose()
