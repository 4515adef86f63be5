"""Sealed text: issue texts and the answers kept for ``Idempotency-Key`` retries are stored
sealed (``sandbox/vault/text.py``).

A migration runs without keys, so it cannot seal. It marks every value written before as
``plain:<text>``, so that no stored text can be taken for a sealed one; the server seals the
marked values when it next starts (``seal_plain_rows``), and reads them as they are until then.
Nothing writes ``plain:`` values afterwards. The schema itself does not change.

Downgrading removes the marks; it refuses while sealed values exist (only the keys open them).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = {
    "dataset_issues": ("title", "description", "answer", "resolution_note"),
    "idempotent_requests": ("response",),
}


def upgrade() -> None:
    for table, columns in _COLUMNS.items():
        marks = ", ".join(f"{c} = 'plain:' || {c}" for c in columns)  # NULL stays NULL
        op.execute(sa.text(f"UPDATE {table} SET {marks}"))


def downgrade() -> None:
    bind = op.get_bind()
    for table, columns in _COLUMNS.items():
        sealed = " OR ".join(f"{c} LIKE 'sealed:%'" for c in columns)
        if bind.execute(sa.text(f"SELECT 1 FROM {table} WHERE {sealed} LIMIT 1")).first():
            raise RuntimeError(f"{table} holds sealed text: it cannot be downgraded")
        for c in columns:
            op.execute(sa.text(
                f"UPDATE {table} SET {c} = substr({c}, 7) WHERE {c} LIKE 'plain:%'"
            ))  # fmt: skip
