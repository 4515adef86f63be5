"""Schema migrations: the Alembic head is exactly ``sandbox.store.metadata``, on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from sandbox.store import db, schema

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
