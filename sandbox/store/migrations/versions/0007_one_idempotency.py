"""One Idempotency-Key mechanism: queries' keys move from ``charges`` to ``idempotent_requests``.

``idempotent_requests`` gains ``headers`` (answers are replayed as they were sent: their content
type and the headers that go with them, such as ``Location``).
The keys that queries kept on their charges are copied over — answered ones as ``done`` with
their answer, failed ones as ``failed``, reserved ones as ``pending`` — keeping the hash they were
stored with. That hash was computed another way than the new one, so a retry of such a request
is refused (``idempotency_key_reused``) rather than run again: nothing is ever charged twice.
A key a member had also used for another kind of call keeps that call's row. Then
``charges.idempotency_key`` and ``charges.request_hash`` are dropped.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_JSON = '{"content-type":"application/json"}'
_STATE = {"released": "done", "failed": "failed", "reserved": "pending"}


def upgrade() -> None:
    op.add_column("idempotent_requests", sa.Column("headers", sa.Text(), nullable=True))
    bind = op.get_bind()
    requests = sa.table(
        "idempotent_requests",
        sa.column("member_id", sa.String),
        sa.column("key", sa.String),
        sa.column("request_hash", sa.String),
        sa.column("state", sa.String),
        sa.column("status", sa.Integer),
        sa.column("response", sa.Text),
        sa.column("headers", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("completed_at", sa.DateTime(timezone=True)),
    )
    taken = {(r.member_id, r.key) for r in bind.execute(sa.text(
        "SELECT member_id, key FROM idempotent_requests"
    ))}  # fmt: skip
    charges = sa.table(
        "charges",
        sa.column("member_id", sa.String),
        sa.column("idempotency_key", sa.String),
        sa.column("request_hash", sa.String),
        sa.column("state", sa.String),
        sa.column("answer", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    keyed = bind.execute(sa.select(charges).where(charges.c.idempotency_key.is_not(None))).all()
    rows = [
        {
            "member_id": r.member_id,
            "key": r.idempotency_key,
            "request_hash": r.request_hash or "0" * 64,
            "state": _STATE.get(r.state, "failed"),
            "status": 200 if r.state == "released" else None,
            "response": r.answer if r.state == "released" else None,
            "headers": _JSON if r.state == "released" else None,
            "created_at": r.created_at,
            "completed_at": r.updated_at if r.state != "reserved" else None,
        }
        for r in keyed
        if (r.member_id, r.idempotency_key) not in taken
    ]
    if rows:
        op.bulk_insert(requests, rows)
    if bind.dialect.name != "sqlite":  # PostgreSQL drops the unique constraint with its column
        op.drop_column("charges", "idempotency_key")
        op.drop_column("charges", "request_hash")
        return
    # SQLite: the table is rebuilt; its unnamed unique constraint gets a name to be dropped by
    with op.batch_alter_table(
        "charges",
        recreate="always",
        naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s"},
    ) as batch:
        batch.drop_constraint("uq_charges_member_id_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
        batch.drop_column("request_hash")


def downgrade() -> None:
    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(
            "uq_charges_member_id_idempotency_key", ["member_id", "idempotency_key"]
        )
    op.drop_column("idempotent_requests", "headers")
