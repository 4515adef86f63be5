"""``audit_checkpoints.number`` and ``hash``: checkpoints form a chain, numbered from 1, each
signing the hash of the one before (docs/audit.md).

Checkpoints written before keep NULL in both: they are checked one by one, as before, and the
chain starts with the first checkpoint written after this migration.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_checkpoints", sa.Column("number", sa.BigInteger(), nullable=True))
    op.add_column("audit_checkpoints", sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_checkpoints_number", "audit_checkpoints", ["number"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoints_number", table_name="audit_checkpoints")
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("hash")
        batch.drop_column("number")
