"""``zone_authorisations``: each zone's operator authorisation (docs/administration.md);
existing zones get an active one with an open-ended term.

Revision ID: 0014
Revises: 0013
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zone_authorisations",
        sa.Column("zone_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("term_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("term_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("certificate", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"]),
        sa.PrimaryKeyConstraint("zone_id"),
    )
    zones = sa.table("zones", sa.column("id", sa.String), sa.column("created_at", sa.DateTime))
    auth = sa.table(
        "zone_authorisations",
        sa.column("zone_id", sa.String),
        sa.column("state", sa.String),
        sa.column("scope", sa.Text),
        sa.column("term_start", sa.DateTime(timezone=True)),
        sa.column("term_end", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    at = datetime.now(UTC)
    rows = op.get_bind().execute(sa.select(zones.c.id, zones.c.created_at)).all()
    if rows:
        op.bulk_insert(
            auth,
            [
                {
                    "zone_id": r.id,
                    "state": "active",
                    "scope": '{"datasets":null,"products":null}',
                    "term_start": r.created_at or at,
                    "term_end": None,
                    "updated_at": at,
                }
                for r in rows
            ],
        )


def downgrade() -> None:
    op.drop_table("zone_authorisations")
