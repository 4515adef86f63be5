"""PostgreSQL: a table or one read-only SELECT, streamed as Arrow by the ADBC PostgreSQL driver.

``postgresql://user@host:port/db?table=schema.name`` reads a table (``{table}``, or no ``table`` and
no ``query`` at all, means the policy table's own name); ``?query=SELECT …`` (URL-encoded) reads a
query's result. The driver (``adbc-driver-postgresql``, libpq and the binary COPY protocol) yields
Arrow record batches directly.

Read-only is enforced twice. Before connecting, :func:`check_read_only` accepts exactly one
``SELECT`` / ``WITH … SELECT`` / ``VALUES`` / ``TABLE`` statement with no data-changing keyword,
no locking clause and no call of a function that changes state, and refuses anything else with
``not_read_only``. Then the session runs with ``default_transaction_read_only = on`` (verified on
the connection before the query runs), so the server itself refuses any write that got through;
the transaction is rolled back at the end.

Options: ``table`` or ``query``; ``statement_timeout`` (seconds, default 3600);
``connect_timeout`` (seconds, default 10); ``extra_columns``; and libpq's ``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``, ``application_name``. A password belongs in the URL or,
better, in ``PGPASSWORD``/``~/.pgpass``; it never appears in messages or reports.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as pg_dbapi  # type: ignore[import-untyped]
import pyarrow as pa

from connectors.base import Progress, ProgressCallback, reader_from
from connectors.convert import Conformer, policy_schema
from connectors.errors import (
    EmptySource,
    InvalidSource,
    NotReadOnly,
    QueryFailed,
    SourceError,
    SourceNotFound,
    SourceUnreachable,
)
from connectors.source import SourceSpec, check_options, option_int
from policies.model import Table

__all__ = ["PostgresConnector", "check_read_only"]

_OWN_OPTIONS: Final = (
    "table",
    "query",
    "statement_timeout",
    "connect_timeout",
    "extra_columns",
)
_LIBPQ_OPTIONS: Final = ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name")
_TABLE_NAME: Final = re.compile(
    r"^(?:([A-Za-z_][A-Za-z0-9_$]{0,62})\.)?([A-Za-z_][A-Za-z0-9_$]{0,62})$"
)

# Statements and clauses that write, lock or change the session. A read-only SELECT has none of
# these words outside string literals, comments and quoted identifiers.
_WRITE_WORDS: Final = frozenset(
    {
        "insert",
        "update",
        "delete",
        "merge",
        "upsert",
        "truncate",
        "create",
        "drop",
        "alter",
        "grant",
        "revoke",
        "copy",
        "call",
        "do",
        "lock",
        "into",
        "set",
        "reset",
        "listen",
        "notify",
        "unlisten",
        "vacuum",
        "analyze",
        "analyse",
        "refresh",
        "execute",
        "prepare",
        "deallocate",
        "discard",
        "cluster",
        "reindex",
        "comment",
        "security",
        "import",
        "load",
        "checkpoint",
        "begin",
        "commit",
        "rollback",
        "savepoint",
        "release",
        "declare",
        "share",  # FOR SHARE / FOR KEY SHARE (FOR UPDATE is caught by "update")
        "nowait",
    }
)
# Functions that change state (or read the server's files) even inside a SELECT.
_WRITE_FUNCTIONS: Final = re.compile(
    r"^(set_config|nextval|setval|txid_current|pg_current_xact_id|pg_sleep\w*|lo_\w+|dblink\w*"
    r"|pg_advisory\w*|pg_try_advisory\w*|pg_terminate_backend|pg_cancel_backend|pg_reload_conf"
    r"|pg_rotate_logfile|pg_switch_wal|pg_create_\w+|pg_drop_\w+|pg_notify|pg_file_\w+"
    r"|pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_reset\w*|pg_logical_\w+"
    r"|pg_replication_\w+|pg_promote|pg_import_system_collations|query_to_xml\w*"
    r"|table_to_xml\w*|cursor_to_xml\w*|database_to_xml\w*|schema_to_xml\w*)$"
)
_FIRST_WORDS: Final = frozenset({"select", "with", "values", "table"})


def _tokens(sql: str) -> list[str]:
    """Words, quoted identifiers (as ``"name``), ``(``, ``;`` and other punctuation of ``sql``;
    comments and string literals dropped. Raises ``ValueError`` on an unterminated one."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise ValueError("unterminated comment")
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch == "'" or (ch in "eE" and sql.startswith("'", i + 1)):
            backslash = ch != "'"
            i += 2 if backslash else 1
            while True:
                if i >= n:
                    raise ValueError("unterminated string")
                if backslash and sql[i] == "\\":
                    i += 2
                elif sql[i] == "'":
                    if sql.startswith("'", i + 1):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
            out.append("'")
        elif ch == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            if end == -1:
                raise ValueError("unterminated dollar quote")
            i = end + len(tag)
            out.append("'")
        elif ch == '"':
            end = i + 1
            while True:
                end = sql.find('"', end)
                if end == -1:
                    raise ValueError("unterminated identifier")
                if sql.startswith('"', end + 1):
                    end += 2
                    continue
                break
            out.append('"' + sql[i + 1 : end].replace('""', '"'))
            i = end + 1
        elif ch.isalpha() or ch == "_":
            m = re.match(r"[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*", sql[i:])
            assert m is not None
            out.append(m.group(0).lower())
            i += len(m.group(0))
        else:
            out.append(ch)
            i += 1
    return out


def check_read_only(sql: str) -> None:
    """Refuse (``not_read_only``) anything but one read-only SELECT. Never echoes the query."""
    try:
        tokens = _tokens(sql)
    except ValueError as exc:
        raise NotReadOnly(f"the query cannot be checked: {exc}") from None
    while tokens and tokens[-1] == ";":
        tokens.pop()
    if not tokens:
        raise NotReadOnly("the query is empty")
    if ";" in tokens:
        raise NotReadOnly("the query must be one statement")
    first = next((t for t in tokens if t != "("), "")
    if first not in _FIRST_WORDS:
        raise NotReadOnly("the query must be a SELECT (or WITH … SELECT, VALUES, TABLE)")
    for index, token in enumerate(tokens):
        if token in _WRITE_WORDS:
            raise NotReadOnly(f"the query is not read-only: it uses {token.upper()}")
        name = token.lstrip('"').lower()
        followed_by_call = index + 1 < len(tokens) and tokens[index + 1] == "("
        if followed_by_call and _WRITE_FUNCTIONS.match(name):
            raise NotReadOnly(f"the query calls {name}(), which is not allowed in a source query")


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else ""


class PostgresConnector:
    """A table or a read-only query of one PostgreSQL database."""

    def __init__(self, spec: SourceSpec) -> None:
        if spec.kind != "postgresql":
            raise InvalidSource("not a PostgreSQL source")
        check_options(spec.options, (*_OWN_OPTIONS, *_LIBPQ_OPTIONS), "postgresql")
        options = spec.options
        if "table" in options and "query" in options:
            raise InvalidSource("give table= or query=, not both")
        self.spec = spec
        self.query = options.get("query")
        self.table_name = options.get("table")
        if self.query is not None:
            check_read_only(self.query)  # before anything connects
        if self.table_name is not None and not _TABLE_NAME.match(self.table_name):
            raise InvalidSource("table= is [schema.]name of letters, digits and '_'")
        self.statement_timeout = option_int(options, "statement_timeout", 3600, minimum=1)
        self.connect_timeout = option_int(options, "connect_timeout", 10, minimum=1)
        self.extra_columns = options.get("extra_columns", "error")
        parts = urlsplit(spec.location)
        if not parts.hostname and not parts.path.strip("/"):
            raise InvalidSource("postgresql://user@host:port/database")

    @property
    def name(self) -> str:
        where = self.spec.name
        if self.table_name:
            return f"{where}?table={self.table_name}"
        return f"{where} (query)" if self.query else where

    def _uri(self) -> str:
        parts = urlsplit(self.spec.location)
        params: dict[str, str] = {k: v for k, v in self.spec.options.items() if k in _LIBPQ_OPTIONS}
        params["connect_timeout"] = str(self.connect_timeout)
        params["options"] = (
            f"-c default_transaction_read_only=on -c statement_timeout={self.statement_timeout}s"
        )
        params.setdefault("application_name", "veil-load")
        query = urlencode(params, quote_via=quote)  # libpq does not read "+" as a space
        return urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))

    def _connect(self) -> Any:
        try:
            return pg_dbapi.connect(self._uri())
        except adbc_driver_manager.Error as exc:
            state = _sqlstate(exc)
            detail = "the database cannot be reached or refused the connection"
            if state:
                detail += f" (SQLSTATE {state})"
            raise SourceUnreachable(detail, source=self.spec.name) from None

    def _fail(self, exc: BaseException) -> SourceError:
        state = _sqlstate(exc)
        source = self.name
        if state == "25006":
            return NotReadOnly(
                "the database refused a write in the read-only session", source=source
            )
        if state in ("42P01", "3F000", "42704"):
            return SourceNotFound(
                f"the table or schema does not exist (SQLSTATE {state})", source=source
            )
        if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return SourceUnreachable(
                f"the connection to the database was lost (SQLSTATE {state})", source=source
            )
        if state == "57014":
            return QueryFailed(
                "the query ran past statement_timeout (SQLSTATE 57014)", source=source
            )
        if state == "42501":
            return QueryFailed("permission denied (SQLSTATE 42501)", source=source)
        if not state and isinstance(exc, adbc_driver_manager.OperationalError):
            return SourceUnreachable("the connection to the database was lost", source=source)
        suffix = f" (SQLSTATE {state})" if state else f" ({type(exc).__name__})"
        return QueryFailed(f"the database refused the query{suffix}", source=source)

    def _sql(self, table: Table) -> str:
        if self.query is not None:
            return self.query.rstrip().rstrip(";")
        name = self.table_name or table.name
        match = _TABLE_NAME.match(name)
        if match is None:
            raise InvalidSource("table= is [schema.]name of letters, digits and '_'")
        schema, relation = match.groups()
        quoted = f'"{relation}"' if schema is None else f'"{schema}"."{relation}"'
        return f"SELECT * FROM {quoted}"

    def size_bytes(self) -> int | None:
        """The table's size on disk (``pg_total_relation_size``); ``None`` for a query."""
        if self.query is not None or self.table_name is None:
            return None
        conn = self._connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(
                    "SELECT pg_total_relation_size(to_regclass($1))", parameters=(self.table_name,)
                )
                row = cur.fetchone()
            finally:
                cur.close()
        except adbc_driver_manager.Error as exc:
            raise self._fail(exc) from None
        finally:
            conn.close()
        if row is None or row[0] is None:
            raise SourceNotFound("the table does not exist", source=self.name)
        return int(row[0])

    def open(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> pa.RecordBatchReader:
        sql = self._sql(table)
        conformer = Conformer(table, extra_columns=self.extra_columns)
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_setting('transaction_read_only')")
            state = cur.fetchone()
            if state is None or state[0] != "on":  # fail closed
                raise NotReadOnly("the session could not be made read-only", source=self.name)
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            conformer.check_schema(reader.schema, file=None)
        except adbc_driver_manager.Error as exc:
            conn.close()
            raise self._fail(exc) from None
        except BaseException:
            conn.close()
            raise
        return reader_from(
            policy_schema(table), self._rows(table, conn, cur, reader, conformer, on_progress)
        )

    def _rows(
        self,
        table: Table,
        conn: Any,
        cur: Any,
        reader: pa.RecordBatchReader,
        conformer: Conformer,
        on_progress: ProgressCallback | None,
    ) -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            try:
                for batch in reader:
                    out = conformer.convert(batch, file=None, first_row=rows + 1)
                    rows += batch.num_rows
                    if on_progress is not None:
                        on_progress(Progress(table.name, rows))
                    if batch.num_rows:
                        yield out
            except adbc_driver_manager.Error as exc:
                raise self._fail(exc) from None
            except pa.ArrowException as exc:
                raise QueryFailed(
                    f"the result could not be read ({type(exc).__name__})", source=self.name
                ) from None
            conformer.finish()
            if rows == 0:
                raise EmptySource("the query returned no rows", source=self.name)
        finally:
            # The reader lives only as long as its cursor (hence the cursor is passed in).
            for step in (reader.close, cur.close, conn.rollback, conn.close):
                with contextlib.suppress(Exception):
                    step()
