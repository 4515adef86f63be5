"""The ledger as one service: grants, charges and the records auditors read, for one state store
and its audit log; built once (the server's lifespan, the CLI's local mode) and handed to the
services that spend or grant budget."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from sandbox.access.model import Actor, MemberRole
from sandbox.audit.log import AuditLog, require_log
from sandbox.ledger import entries
from sandbox.ledger.budgets import BudgetStatus, describe
from sandbox.ledger.charges import Charges
from sandbox.ledger.entries import LedgerEntry
from sandbox.ledger.grants import Grants

READERS = (MemberRole.AUDITOR, MemberRole.ADMIN)


class Ledger:
    """``grants`` (make, read, sub-budgets) and ``charges`` (reserve, settle, the answer
    cache), recording every change in ``audit``."""

    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the ledger")
        self.grants = Grants(engine, audit)
        self.charges = Charges(engine, audit, self.grants)

    def entries(
        self,
        actor: Actor,
        *,
        tenant_id: str | None = None,
        dataset_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[LedgerEntry]:
        """Every charge and credit, oldest first: for auditors and admins (and the local
        administrator)."""
        actor.require(*READERS)
        return entries.entries(
            self.engine,
            tenant_id=tenant_id,
            dataset_id=dataset_id,
            since=since,
            until=until,
            limit=limit,
        )

    def budgets(self, actor: Actor) -> list[BudgetStatus]:
        """The grants of the acting member's tenant, as that member may spend them."""
        member = actor.require_member(*MemberRole)
        return [
            describe(g, self.grants.member_budget(g.id, member.id))
            for g in self.grants.grants_of(actor, member.tenant_id)
        ]
