"""Quota use per tenant, template and hour: ``verification_quota_use``, filled from the events.

Revision ID: 0006
Revises: 0005
"""

from collections import Counter
from datetime import UTC

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    use = op.create_table(
        "verification_quota_use",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
        ),
        sa.PrimaryKeyConstraint("tenant_id", "template_id", "hour"),
    )
    # Every stored event is one unit of its tenant's quota (what the answers counted so far).
    events = sa.table(
        "verification_events",
        sa.column("tenant_id", sa.String),
        sa.column("template_id", sa.String),
        sa.column("at", sa.DateTime(timezone=True)),
    )
    counts: Counter[tuple[str, str, int]] = Counter()
    query = sa.select(events.c.tenant_id, events.c.template_id, events.c.at)
    for tenant, template, at in op.get_bind().execute(query):
        if at.tzinfo is None:  # SQLite keeps UTC without an offset
            at = at.replace(tzinfo=UTC)
        counts[(tenant, template, int(at.timestamp()) // 3600)] += 1
    if counts:
        op.bulk_insert(
            use,
            [
                {"tenant_id": t, "template_id": p, "hour": h, "units": n}
                for (t, p, h), n in counts.items()
            ],
        )


def downgrade() -> None:
    op.drop_table("verification_quota_use")
