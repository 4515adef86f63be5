"""``version_loads`` keyed by a load id; a failed load releases its version number.

A load is recorded under its own ``id``; ``version`` is the number it holds while loading and
once ready, NULL once it failed (unique per dataset, so two loads never hold one number). The
table is rebuilt with the new key: every existing row gets an id, and the failed ones release
the numbers they held (the next load is numbered after the last ready or loading version).

Revision ID: 0011
Revises: 0010
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS = (
    "dataset_id",
    "version",
    "zone_id",
    "state",
    "source",
    "policy",
    "path",
    "rows_loaded",
    "bytes_read",
    "bytes_total",
    "current_table",
    "report",
    "error",
    "started_by",
    "started_at",
    "updated_at",
    "finished_at",
)


def _columns(version_nullable: bool) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=version_nullable),
        sa.Column("zone_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("rows_loaded", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=True),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("current_table", sa.String(length=64), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"]),
    ]


def _copy(source: str, target: str, with_id: bool) -> None:
    names = ", ".join(_COLUMNS)
    bind = op.get_bind()
    if not with_id:
        bind.execute(sa.text(f"INSERT INTO {target} ({names}) SELECT {names} FROM {source}"))
        return
    rows = bind.execute(sa.text(f"SELECT {names} FROM {source}")).mappings().all()
    for row in rows:
        values = dict(row)
        values["id"] = f"load_{uuid.uuid4().hex[:16]}"
        if values["state"] == "failed":
            values["version"] = None  # released
        marks = ", ".join(f":{k}" for k in values)
        bind.execute(
            sa.text(f"INSERT INTO {target} ({', '.join(values)}) VALUES ({marks})"), values
        )


def upgrade() -> None:
    op.create_table(
        "version_loads_new",
        sa.Column("id", sa.String(length=64), nullable=False),
        *_columns(version_nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "version", name="uq_version_loads_dataset_id_version"),
    )
    _copy("version_loads", "version_loads_new", with_id=True)
    op.drop_table("version_loads")
    op.rename_table("version_loads_new", "version_loads")


def downgrade() -> None:
    op.create_table(
        "version_loads_old",
        *_columns(version_nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "version"),
    )
    # failed loads have no number any more: they cannot be keyed by one and are dropped
    names = ", ".join(_COLUMNS)
    op.get_bind().execute(
        sa.text(
            f"INSERT INTO version_loads_old ({names}) SELECT {names} FROM version_loads "
            "WHERE version IS NOT NULL"
        )
    )
    op.drop_table("version_loads")
    op.rename_table("version_loads_old", "version_loads")
