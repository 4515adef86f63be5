"""Schema migrations: the Alembic head is exactly ``sandbox.store.metadata``, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text

from sandbox import idempotency
from sandbox.onboarding.issues import Issues
from sandbox.store import db, schema
from sandbox.vault.text import SealedText, seal_plain_rows
from tests.support.store import LOCAL, local_audit

MIGRATIONS = Path(schema.__file__).parent / "migrations"


def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_one_linear_history() -> None:
    script = _script()
    assert len(script.get_heads()) == 1, "migrations branch: merge them"
    assert len(script.get_bases()) == 1


def test_head_schema_equals_the_metadata(state_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    engine = db.connect(state_url)  # runs every migration on an empty store
    try:
        db.migrate(engine)  # a second run is a no-op
        with engine.connect() as con:
            context = MigrationContext.configure(
                con, opts={"compare_type": True, "compare_server_default": True}
            )
            assert context.get_current_revision() == _script().get_current_head()
            differences = compare_metadata(context, schema.metadata)
        assert differences == [], differences
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set(schema.metadata.tables)
    finally:
        engine.dispose()


def test_query_keys_move_from_charges_to_idempotent_requests(
    state_url: str, tmp_path: Path
) -> None:
    """0007: a key a query kept on its charge is kept in ``idempotent_requests`` (answered,
    failed or pending as the charge was), and ``charges`` loses its key columns."""
    (tmp_path / "data").mkdir()
    engine = create_engine(state_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as con:
            config.attributes["connection"] = con
            command.upgrade(config, "0006")
            stamp = datetime(2026, 1, 1, tzinfo=UTC)
            con.execute(
                text("INSERT INTO zones VALUES ('z', 'domain', 't', 'o', '', :at)"), {"at": stamp}
            )
            con.execute(
                text("INSERT INTO datasets VALUES ('d', 'z', 't', NULL, :at)"), {"at": stamp}
            )
            con.execute(text(
                "INSERT INTO tenants VALUES ('t', 'n', 'research', 'public_welfare', :at)"
            ), {"at": stamp})  # fmt: skip
            con.execute(
                text("INSERT INTO members VALUES ('m', 't', 'n', 'analyst', :at, NULL)"),
                {"at": stamp},
            )
            con.execute(text(
                "INSERT INTO grants VALUES "
                "('g', 't', 'd', 'pure', 1, 0, 1, 0, 'none', 1, 1, 0, 0, :at)"
            ), {"at": stamp})  # fmt: skip
            for charge, state, key, answer in [
                ("c1", "released", "k1", '{"rows": []}'),
                ("c2", "failed", "k2", None),
                ("c3", "reserved", "k3", None),
                ("c4", "released", None, '{"rows": []}'),
            ]:
                con.execute(
                    text(
                        "INSERT INTO charges VALUES (:id, 'g', 'm', 'q', 1, 1, 0, :state, :key, "
                        "'h', :answer, :at, :at)"
                    ),
                    {"id": charge, "state": state, "key": key, "answer": answer, "at": stamp},
                )
        db.migrate(engine)
        with engine.connect() as con:
            rows = con.execute(
                select(schema.idempotent_requests).order_by(schema.idempotent_requests.c.key)
            ).all()
            columns = {c["name"] for c in inspect(con).get_columns("charges")}
        assert [(r.key, r.state, r.status, r.response) for r in rows] == [
            ("k1", "done", 200, 'plain:{"rows": []}'),  # 0010: marked, sealed at start
            ("k2", "failed", None, None),
            ("k3", "pending", None, None),
        ]
        assert {"idempotency_key", "request_hash"}.isdisjoint(columns)
    finally:
        engine.dispose()


def test_texts_from_before_sealing_are_marked_then_sealed(state_url: str, tmp_path: Path) -> None:
    """0010: issue texts and stored answers written before are marked ``plain:`` (a migration
    has no keys), read as they were, and sealed by ``seal_plain_rows`` (run at server start),
    after which the store holds none of them in the clear; a second run seals nothing."""
    (tmp_path / "data").mkdir()
    engine = create_engine(state_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with engine.begin() as con:
            config.attributes["connection"] = con
            command.upgrade(config, "0008")
            con.execute(
                text("INSERT INTO zones VALUES ('z', 'domain', 't', 'o', '', :at)"), {"at": stamp}
            )
            con.execute(
                text("INSERT INTO datasets VALUES ('d', 'z', 't', NULL, :at)"), {"at": stamp}
            )
            con.execute(text(
                "INSERT INTO tenants VALUES ('t', 'n', 'research', 'public_welfare', :at)"
            ), {"at": stamp})  # fmt: skip
            con.execute(
                text("INSERT INTO members VALUES ('m', 't', 'n', 'admin', :at, NULL)"),
                {"at": stamp},
            )
            con.execute(
                schema.dataset_issues.insert().values(
                    id="iss_old", dataset_id="d", number=1, title="OLDTITLE",
                    description="OLDDESCRIPTION", state="answered", answer="OLDANSWER",
                    answered_at=stamp, created_at=stamp,
                )
            )  # fmt: skip
            con.execute(
                schema.idempotent_requests.insert().values(
                    member_id="m", key="k", request_hash="h" * 64, state="done", status=201,
                    response='{"answer":"OLDRESPONSE"}', headers="{}", created_at=stamp,
                )
            )  # fmt: skip
        db.migrate(engine)
        audit = local_audit(engine)
        texts = SealedText(audit)
        issues = Issues(engine, audit)

        def stored() -> list[str | None]:
            with engine.connect() as con:
                issue = con.execute(select(schema.dataset_issues)).one()
                answer = con.execute(select(schema.idempotent_requests.c.response)).scalar_one()
            return [issue.title, issue.description, issue.answer, issue.resolution_note, answer]

        def read_back() -> None:
            issue = issues.get_issue(LOCAL, "d", 1)
            assert (issue.title, issue.description) == ("OLDTITLE", "OLDDESCRIPTION")
            assert issue.answer is not None and issue.answer.text == "OLDANSWER"
            replay = idempotency.claim(engine, texts, "m", "k", "h" * 64)
            assert replay is not None and replay.body == '{"answer":"OLDRESPONSE"}'

        assert stored() == [
            "plain:OLDTITLE", "plain:OLDDESCRIPTION", "plain:OLDANSWER", None,
            'plain:{"answer":"OLDRESPONSE"}',
        ]  # fmt: skip
        read_back()
        assert seal_plain_rows(texts) == 2
        values = stored()
        assert values[3] is None
        assert all(v.startswith("sealed:1:") and "OLD" not in v for v in values if v)
        read_back()
        assert seal_plain_rows(texts) == 0 and stored() == values
    finally:
        engine.dispose()


def test_loads_get_ids_and_failed_ones_release_their_numbers(
    state_url: str, tmp_path: Path
) -> None:
    """0011: ``version_loads`` is keyed by a load id; the failed loads of a store from before
    release the numbers they held, so the next load follows the last version made."""
    (tmp_path / "data").mkdir()
    engine = create_engine(state_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as con:
            config.attributes["connection"] = con
            command.upgrade(config, "0008")
            stamp = datetime(2026, 1, 1, tzinfo=UTC)
            con.execute(
                text("INSERT INTO zones VALUES ('z', 'domain', 't', 'o', '', :at)"), {"at": stamp}
            )
            con.execute(text("INSERT INTO datasets VALUES ('d', 'z', 't', 1, :at)"), {"at": stamp})
            for version, state in [(1, "ready"), (2, "failed"), (3, "failed")]:
                con.execute(
                    text(
                        "INSERT INTO version_loads (dataset_id, version, zone_id, state, source, "
                        "policy, path, rows_loaded, started_at, updated_at) VALUES "
                        "('d', :v, 'z', :state, 's', 'p', 'x', 0, :at, :at)"
                    ),
                    {"v": version, "state": state, "at": stamp},
                )
        db.migrate(engine)
        with engine.connect() as con:
            rows = con.execute(
                select(schema.version_loads).order_by(schema.version_loads.c.version)
            ).all()
        assert sorted((r.version or 0, r.state) for r in rows) == [
            (0, "failed"),
            (0, "failed"),
            (1, "ready"),
        ]
        assert len({r.id for r in rows}) == 3 and all(r.id.startswith("load_") for r in rows)
    finally:
        engine.dispose()


def test_existing_zones_get_an_active_open_ended_authorisation(
    state_url: str, tmp_path: Path
) -> None:
    """0014: every zone that existed is authorised, active, unscoped and open-ended."""
    (tmp_path / "data").mkdir()
    engine = create_engine(state_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as con:
            config.attributes["connection"] = con
            command.upgrade(config, "0013")
            stamp = datetime(2026, 1, 1, tzinfo=UTC)
            con.execute(
                text("INSERT INTO zones VALUES ('z', 'domain', 't', 'o', '', :at)"), {"at": stamp}
            )
            command.upgrade(config, "0014")
            rows = con.execute(select(schema.zone_authorisations)).all()
        assert [(r.zone_id, r.state, r.term_end) for r in rows] == [("z", "active", None)]
        assert rows[0].scope == '{"datasets":null,"products":null}'
    finally:
        engine.dispose()
