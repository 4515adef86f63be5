"""``dataset_versions.within_row_caps``: which tables of a version keep their row caps, recorded
with the version, so a query is planned once, before its charge, with the final SQL.

Existing versions get NULL: the first query on one measures it (after its charge, as before)
and records it for every later query, in every process.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dataset_versions", sa.Column("within_row_caps", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("within_row_caps")
