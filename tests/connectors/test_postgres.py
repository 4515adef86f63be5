"""PostgreSQL sources against a real server (see conftest: VEIL_TEST_POSTGRES_URL or a throwaway
server started with scripts/postgres.sh), and the read-only check on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import adbc_driver_postgresql.dbapi as pg_dbapi  # type: ignore[import-untyped]
import pytest

from connectors.connect import connect
from connectors.errors import SourceError
from connectors.load import ingest
from connectors.postgres import PostgresConnector, check_read_only
from connectors.source import parse_source
from policies.model import Policy, Table
from tests.support.connectors import GOOD_ROWS, execute, read_error, rows
from tests.support.servers import free_port


@pytest.fixture()
def pg(postgres_url: str) -> Iterator[str]:
    """The server's URL, with a fresh schema ``src`` holding the good fixture rows."""
    values = ", ".join(
        "("
        + ", ".join(
            "NULL"
            if v is None
            else (str(v).lower() if isinstance(v, bool | int | float) else f"'{v}'")
            for v in r
        )
        + ")"
        for r in GOOD_ROWS
    )
    execute(
        postgres_url,
        "DROP SCHEMA IF EXISTS src CASCADE",
        "CREATE SCHEMA src",
        "CREATE TABLE src.firms (credit_code text, district varchar(10), founded date, "
        "revenue numeric(12,2), staff int4, active boolean)",
        f"INSERT INTO src.firms VALUES {values}",
        "CREATE TABLE src.audit (n int)",
        "CREATE SEQUENCE src.seq",
    )
    yield postgres_url


def count_audit(url: str) -> int:
    with pg_dbapi.connect(url) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM src.audit")
        (n,) = cur.fetchone()
        return int(n)


def test_table(pg: str, table: Table) -> None:
    connector = connect(f"{pg}?table=src.firms")
    assert (connector.size_bytes() or 0) > 0
    assert rows(connector.open(table)) == GOOD_ROWS
    assert "@" not in connector.name or ":" not in connector.name.split("@")[0][13:]


def test_query(pg: str, table: Table) -> None:
    sql = (
        "SELECT credit_code, district, founded, revenue, staff, active FROM src.firms "
        "WHERE staff IS NOT NULL ORDER BY credit_code"
    )
    connector = connect(f"{pg}?query={quote(sql)}")
    assert connector.size_bytes() is None
    assert rows(connector.open(table)) == [r for r in GOOD_ROWS if r[4] is not None]


def test_table_placeholder_in_ingest(pg: str, policy: Policy, tmp_path: Path) -> None:
    report = ingest(policy, f"{pg}?table=src.{{table}}", tmp_path / "ws.duckdb")
    assert report.tables[0].rows == 4


def test_wrong_types_from_a_query(pg: str, table: Table) -> None:
    sql = (
        "SELECT credit_code, district, founded, revenue, "
        "CASE WHEN credit_code = 'A2' THEN 'n/a' ELSE staff::text END AS staff, active "
        "FROM src.firms ORDER BY credit_code"
    )
    err = read_error(f"{pg}?query={quote(sql)}", table)
    assert (err.code, err.row, err.column) == ("type_conversion", 2, "staff")


def test_missing_unit_column(pg: str, table: Table) -> None:
    sql = "SELECT district, founded, revenue, staff, active FROM src.firms"
    err = read_error(f"{pg}?query={quote(sql)}", table)
    assert (err.code, err.column) == ("missing_unit_column", "credit_code")


def test_incompatible_type(pg: str, table: Table) -> None:
    sql = "SELECT credit_code, district, founded, revenue, active AS staff, active FROM src.firms"
    err = read_error(f"{pg}?query={quote(sql)}", table)
    assert (err.code, err.column) == ("schema_mismatch", "staff")


def test_missing_table_and_empty_result(pg: str, table: Table) -> None:
    assert read_error(f"{pg}?table=src.nope", table).code == "source_not_found"
    sql = "SELECT * FROM src.firms WHERE false"
    assert read_error(f"{pg}?query={quote(sql)}", table).code == "empty_source"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO src.audit VALUES (1)",
        "WITH x AS (INSERT INTO src.audit VALUES (1) RETURNING n) SELECT * FROM x",
        "SELECT * FROM src.firms; DELETE FROM src.audit",
        "SELECT nextval('src.seq') AS credit_code",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT * INTO src.copy FROM src.firms",
        "SELECT * FROM src.firms FOR UPDATE",
        "UPDATE src.audit SET n = 2",
        "CREATE TABLE src.x (n int)",
        "COPY src.audit FROM PROGRAM 'id'",
        "SELECT 1 /* unterminated",
    ],
)
def test_not_read_only_refused_before_connecting(sql: str, table: Table, pg: str) -> None:
    # the host does not even exist: the refusal comes before any connection
    with pytest.raises(SourceError) as info:
        connect(f"postgresql://veil@127.0.0.1:{free_port()}/x?query={quote(sql)}").open(table)
    assert info.value.code == "not_read_only"
    assert sql not in info.value.detail
    # …and against the real server nothing was written
    with pytest.raises(SourceError) as info:
        connect(f"{pg}?query={quote(sql)}").open(table)
    assert info.value.code == "not_read_only"
    assert count_audit(pg) == 0


def test_the_session_is_read_only_on_the_server(pg: str, table: Table) -> None:
    """A write that slipped past the static check is refused by the server."""
    conn = PostgresConnector(parse_source(f"{pg}?table=src.firms"))
    conn.query = "INSERT INTO src.audit VALUES (1) RETURNING n AS credit_code"
    with pytest.raises(SourceError) as info:
        conn.open(table).read_all()
    assert info.value.code == "not_read_only"
    assert count_audit(pg) == 0


def test_unreachable(table: Table) -> None:
    err = read_error(f"postgresql://veil@127.0.0.1:{free_port()}/x?table=t", table)
    assert err.code == "source_unreachable"
    assert err.status == 502


def test_password_never_shown(table: Table) -> None:
    with pytest.raises(SourceError) as info:
        connect(f"postgresql://veil:hunter2@127.0.0.1:{free_port()}/x?table=t").open(table)
    assert "hunter2" not in str(info.value.problem())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t",
        "  select a, 'it''s; DROP TABLE x' AS b FROM t;",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "(SELECT 1) UNION (SELECT 2)",
        "VALUES (1, 2)",
        "TABLE t",
        'SELECT "update", "insert" FROM t -- delete\n',
        "SELECT $$ DELETE $$ AS x, E'\\' UPDATE' AS y",
        "SELECT last_update, created_at FROM t ORDER BY 1 FETCH FIRST 3 ROWS ONLY",
        "SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t",
    ],
)
def test_read_only_accepts(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "",
        ";",
        "DELETE FROM t",
        "EXPLAIN ANALYZE DELETE FROM t",
        "SELECT 1; SELECT 2",
        "select pg_sleep(100)",
        "SELECT \"nextval\"('s')",
        "SELECT pg_catalog.setval('s', 1)",
        "SELECT * FROM t FOR SHARE",
        "SELECT lo_import('/etc/passwd')",
        "SELECT * FROM dblink('x', 'y') AS t(a int)",
        "DO $$ BEGIN END $$",
        "SET ROLE admin",
        "SELECT 'unterminated",
    ],
)
def test_read_only_refuses(sql: str) -> None:
    with pytest.raises(SourceError) as info:
        check_read_only(sql)
    assert info.value.code == "not_read_only"


def test_quota(pg: str, policy: Policy, tmp_path: Path) -> None:
    workspace = tmp_path / "ws.duckdb"
    # a table's size is known before reading…
    with pytest.raises(SourceError) as info:
        ingest(policy, f"{pg}?table=src.firms", workspace, quota_bytes=10)
    assert (info.value.code, info.value.extra["quota_bytes"]) == ("source_too_large", 10)
    # …a query's only while it streams: the Arrow bytes read count against the quota
    sql = "SELECT * FROM src.firms"
    with pytest.raises(SourceError) as info:
        ingest(policy, f"{pg}?query={quote(sql)}", workspace, quota_bytes=10)
    assert info.value.code == "source_too_large"
    assert not workspace.exists()
