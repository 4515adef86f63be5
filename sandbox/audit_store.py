"""State of the audit log: entries, the chain head, wrapped data keys, signed checkpoints.

The tables are defined on :data:`sandbox.store.metadata` (``sandbox.store`` imports this module
at its end); migration ``0004_audit`` creates them and the head row. The format of an entry and
how each table is checked are in ``docs/audit.md``.

- ``audit_entries``: one row per entry, ``seq`` contiguous from 1. ``body`` is the canonical JSON
  the chain covers; the other columns repeat some of its members so that entries can be
  filtered (verification checks that they agree with the body). No foreign keys: an entry
  outlives whatever it names.
- ``audit_head``: one row (``id`` 1), the last ``seq`` and its hash. Appends lock it (``SELECT …
  FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so
  concurrent transactions chain one after another.
- ``audit_data_keys``: the AES-256-GCM keys that seal entries' sensitive members, each stored
  wrapped by a master key (:mod:`sandbox.masterkey`) whose id it names.
- ``audit_checkpoints``: signed tree heads over the first ``tree_size`` entries.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text

from sandbox.store import metadata

__all__ = ["audit_checkpoints", "audit_data_keys", "audit_entries", "audit_head"]

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("action", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=True),  # the tenant the entry concerns
    Column("member_id", String(64), nullable=True),  # who acted (NULL: local or system)
    Column("status", Integer, nullable=True),  # the HTTP status, when the entry knows it
    Column("code", String(64), nullable=False),  # ok, or an error code
    Column("body", Text, nullable=False),  # canonical JSON, what the hash covers
    Column("hash", String(64), nullable=False),  # hex SHA-256 of body
    Column("mac", String(64), nullable=False),  # hex HMAC-SHA256 of the hash
    Index("ix_audit_entries_tenant", "tenant_id", "seq"),
    Index("ix_audit_entries_kind", "kind", "seq"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("seq", BigInteger, nullable=False),  # 0: no entry yet
    Column("hash", String(64), nullable=False),  # 64 zeros: no entry yet
)

audit_data_keys = Table(
    "audit_data_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("master_key_id", String(64), nullable=False),
    Column("wrapped", Text, nullable=False),  # base64url(nonce || AES-GCM ciphertext)
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),  # hex
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("document", Text, nullable=False),  # the signed checkpoint, JSON
    Index("ix_audit_checkpoints_at", "at"),
)
