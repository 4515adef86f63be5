"""Property tests of the ledger: any interleaving of reserves and settlements keeps it exact.

A hypothesis state machine drives the real ledger functions on a real SQLite state store (WAL,
``BEGIN IMMEDIATE``, migrations) in a temporary directory, next to a plain Python model. Rules
create grants (random budgets and per-query caps in micro-units, some refreshing daily), add
members with or without sub-budgets, reserve random costs (alone, or several at once from
threads), settle charges as released or failed, change sub-budgets and let days pass.

After every step, for every grant: ``consistency`` holds (credited == Σ credits, spent ==
Σ charges, 0 ≤ spent ≤ credited), the same for δ, sub-budget counters equal the sum of their
member's charges, and everything equals the model. A reserve that the model says must fail (over
the cap, the budget, δ or a sub-budget) raises ``BudgetExhausted`` and changes no row.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Engine, func, select, update

from policies.accounting import Accounting
from sandbox.access import members, tenants
from sandbox.access.model import Actor, MemberRole
from sandbox.clock import utc
from sandbox.errors import BudgetExhausted
from sandbox.ledger.charges import ChargeState, Reservation, consistency
from sandbox.ledger.grants import Refresh
from sandbox.ledger.service import Ledger
from sandbox.store import db
from sandbox.store.schema import charges, credits, grants, member_budgets
from tests.support.ledger import analyst_actor
from tests.support.store import LOCAL, local_audit, seed_catalog

DATASET = "ds"


@dataclass
class MemberModel:
    id: str
    grant_id: str
    sub_budget: int | None  # micro; None: spends from the grant only
    spent: int = 0  # against the sub-budget


@dataclass
class GrantModel:
    id: str
    period_budget: int
    period_delta: int
    cap: int
    refresh: Refresh
    credited: int
    credited_delta: int
    spent: int = 0
    spent_delta: int = 0


@dataclass
class ChargeModel:
    id: str
    grant_id: str
    member_id: str
    cost: int
    delta: int
    state: ChargeState = ChargeState.RESERVED


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every ledger row, for "changes nothing" checks."""
    out = {}
    with engine.connect() as con:
        for table in (grants, member_budgets, credits, charges):
            out[table.name] = sorted(tuple(r) for r in con.execute(select(table)).all())
    return out


class LedgerMachine(RuleBasedStateMachine):
    grant_ids = Bundle("grants")
    member_ids = Bundle("members")
    charge_ids = Bundle("charges")

    def __init__(self) -> None:
        super().__init__()
        # A RAM disk where there is one: the same store, without paying for fsync 1,500 times.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="veil-ledger-prop-", dir=shm)
        self.engine = db.connect(f"sqlite:///{self.dir}/state.db")
        seed_catalog(self.engine, DATASET)
        self.ledger = Ledger(self.engine, local_audit(self.engine))
        self.grants: dict[str, GrantModel] = {}
        self.members: dict[str, MemberModel] = {}
        self.charges: dict[str, ChargeModel] = {}
        self.reservations: dict[str, Reservation] = {}
        self.tenant_of: dict[str, str] = {}
        self.touched: set[str] = set()  # grants changed (or refused) by the current step

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules ------------------------------------------------------------------------------------

    @rule(
        target=grant_ids,
        budget=st.integers(1, 5_000_000),
        cap=st.integers(1, 6_000_000),
        delta=st.integers(0, 1_000),
        refresh=st.sampled_from([Refresh.NONE, Refresh.DAILY]),
    )
    def create_grant(self, budget: int, cap: int, delta: int, refresh: Refresh) -> str:
        tenant = tenants.create_tenant(
            self.engine, local_audit(self.engine), LOCAL, "t", "research", "public_welfare"
        )
        grant_id = self.ledger.grants.create_grant(
            LOCAL,
            tenant,
            DATASET,
            Accounting.PURE,
            budget_micro=budget,
            delta_pico=delta,
            per_query_cap_micro=cap,
            refresh=refresh,
        )
        self.grants[grant_id] = GrantModel(grant_id, budget, delta, cap, refresh, budget, delta)
        self.tenant_of[grant_id] = tenant
        self.touched.add(grant_id)
        return grant_id

    @rule(
        target=member_ids,
        grant_id=grant_ids,
        sub_budget=st.none() | st.integers(1, 3_000_000),
    )
    def add_member(self, grant_id: str, sub_budget: int | None) -> str:
        member_id, _ = members.create_member(
            self.engine,
            local_audit(self.engine),
            LOCAL,
            self.tenant_of[grant_id],
            "m",
            MemberRole.ANALYST,
        )
        if sub_budget is not None:
            self.ledger.grants.set_member_budget(LOCAL, grant_id, member_id, sub_budget)
        self.members[member_id] = MemberModel(member_id, grant_id, sub_budget)
        return member_id

    def _actor(self, member: MemberModel) -> Actor:
        return analyst_actor(member.id, self.tenant_of[member.grant_id])

    def _expected(self, member: MemberModel, cost: int, delta: int) -> str:
        """What ``reserve`` must do, in the order it checks."""
        grant = self.grants[member.grant_id]
        if cost > grant.cap:
            return "cap"
        if grant.spent + cost > grant.credited or grant.spent_delta + delta > grant.credited_delta:
            return "budget"
        if member.sub_budget is not None and member.spent + cost > member.sub_budget:
            return "sub_budget"
        return "ok"

    def _record(self, member: MemberModel, charge_id: str, cost: int, delta: int) -> None:
        grant = self.grants[member.grant_id]
        grant.spent += cost
        grant.spent_delta += delta
        if member.sub_budget is not None:
            member.spent += cost
        self.charges[charge_id] = ChargeModel(charge_id, grant.id, member.id, cost, delta)

    @rule(
        target=charge_ids,
        member_id=member_ids,
        cost=st.integers(1, 2_000_000) | st.sampled_from([1, 100_000, 1_000_000]),
        delta=st.integers(0, 400),
    )
    def reserve(self, member_id: str, cost: int, delta: int) -> str | None:
        member = self.members[member_id]
        self.touched.add(member.grant_id)
        expected = self._expected(member, cost, delta)
        before = _snapshot(self.engine)
        grant = self.ledger.grants.grant_by_id(LOCAL, member.grant_id)
        try:
            reservation = self.ledger.charges.reserve(
                self._actor(member), grant, "q" * 64, 1, cost, delta
            )
        except BudgetExhausted:
            assert expected in ("cap", "budget", "sub_budget"), expected
            assert _snapshot(self.engine) == before
            return None
        assert expected == "ok", expected
        self._record(member, reservation.charge_id, cost, delta)
        self.reservations[reservation.charge_id] = reservation
        assert reservation.grant.spent_micro == self.grants[member.grant_id].spent
        return reservation.charge_id

    @rule(
        member_id=member_ids,
        n=st.integers(2, 6),
        cost=st.integers(1, 1_500_000),
    )
    def reserve_concurrently(self, member_id: str, n: int, cost: int) -> None:
        """``n`` threads reserve the same cost at once: exactly as many succeed as fit."""
        member = self.members[member_id]
        grant = self.grants[member.grant_id]
        self.touched.add(grant.id)
        fits = 0
        if cost <= grant.cap:
            room = grant.credited - grant.spent
            if member.sub_budget is not None:
                room = min(room, member.sub_budget - member.spent)
            fits = max(0, min(n, room // cost))
        current = self.ledger.grants.grant_by_id(LOCAL, grant.id)
        barrier = threading.Barrier(n, timeout=30)
        results: list[str | None] = [None] * n

        def one(i: int) -> None:
            barrier.wait()
            try:
                reservation = self.ledger.charges.reserve(
                    self._actor(member), current, "c" * 64, 1, cost, 0
                )
            except BudgetExhausted:
                return
            results[i] = reservation.charge_id
            self.reservations[reservation.charge_id] = reservation

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        made = [r for r in results if r is not None]
        assert len(made) == fits, (len(made), fits)
        for charge_id in made:
            self._record(member, charge_id, cost, 0)

    @rule(
        charge_id=consumes(charge_ids),
        state=st.sampled_from([ChargeState.RELEASED, ChargeState.FAILED]),
    )
    def settle(self, charge_id: str | None, state: ChargeState) -> None:
        if charge_id is None:  # a refused reserve
            return
        answer = '{"rows": []}' if state == "released" else None
        self.ledger.charges.settle(LOCAL, charge_id, state, answer)
        self.charges[charge_id].state = state
        self.touched.add(self.charges[charge_id].grant_id)
        # Settling again (a late duplicate) changes nothing: only a reserved charge settles.
        before = _snapshot(self.engine)
        self.ledger.charges.settle(LOCAL, charge_id, ChargeState.FAILED)
        self.ledger.charges.settle(LOCAL, charge_id, ChargeState.RELEASED, '{"rows": [1]}')
        assert _snapshot(self.engine) == before

    @rule(charge_id=consumes(charge_ids))
    def cancel(self, charge_id: str | None) -> None:
        """A run that failed before any data was read gives its reservation back, once."""
        if charge_id is None:  # a refused reserve
            return
        charge = self.charges[charge_id]
        assert self.ledger.charges.cancel(LOCAL, self.reservations[charge_id], "workspace_missing")
        grant, member = self.grants[charge.grant_id], self.members[charge.member_id]
        grant.spent -= charge.cost
        grant.spent_delta -= charge.delta
        if member.sub_budget is not None:
            member.spent -= charge.cost
        charge.state = ChargeState.CANCELLED
        self.touched.add(grant.id)
        # Cancelled is final: settling or cancelling again changes nothing.
        before = _snapshot(self.engine)
        self.ledger.charges.settle(LOCAL, charge_id, ChargeState.FAILED)
        assert not self.ledger.charges.cancel(LOCAL, self.reservations[charge_id], "again")
        assert _snapshot(self.engine) == before

    @precondition(lambda self: any(m.sub_budget is not None for m in self.members.values()))
    @rule(data=st.data(), sub_budget=st.integers(1, 3_000_000))
    def change_sub_budget(self, data: st.DataObject, sub_budget: int) -> None:
        with_sub = sorted(m for m, model in self.members.items() if model.sub_budget is not None)
        member = self.members[data.draw(st.sampled_from(with_sub))]
        self.ledger.grants.set_member_budget(LOCAL, member.grant_id, member.id, sub_budget)
        member.sub_budget = sub_budget

    @rule(grant_id=grant_ids, days=st.integers(1, 3))
    def days_pass(self, grant_id: str, days: int) -> None:
        """Move the grant's origin back: each day begun credits one more period, visibly."""
        grant = self.grants[grant_id]
        self.touched.add(grant_id)
        with self.engine.begin() as con:
            origin = con.execute(
                select(grants.c.created_at).where(grants.c.id == grant_id)
            ).scalar_one()
            con.execute(
                update(grants)
                .where(grants.c.id == grant_id)
                .values(created_at=utc(origin) - timedelta(days=days))
            )
        if grant.refresh == Refresh.DAILY:
            grant.credited += days * grant.period_budget
            grant.credited_delta += days * grant.period_delta
        refreshed = self.ledger.grants.grant_by_id(LOCAL, grant_id)  # reading credits what is due
        assert refreshed.budget_micro == grant.credited

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def ledger_is_exact(self) -> None:
        """Every grant's counters against its ledger and the model; ``consistency`` for the
        grants the last step touched (calling it for all of them every step is what is slow)."""

        def sums(column: Any, key: Any) -> dict[str, int]:
            """Per ``key``; of the charges, those that count (a cancelled one gave its cost
            back)."""
            query = select(key, func.sum(column)).group_by(key)
            if column.table is charges:
                query = query.where(charges.c.state != ChargeState.CANCELLED.value)
            return {k: int(v) for k, v in con.execute(query).all()}

        with self.engine.connect() as con:
            charged = sums(charges.c.cost_micro, charges.c.grant_id)
            charged_delta = sums(charges.c.delta_pico, charges.c.grant_id)
            credited = sums(credits.c.amount_micro, credits.c.grant_id)
            credited_delta = sums(credits.c.delta_pico, credits.c.grant_id)
            by_member = sums(charges.c.cost_micro, charges.c.member_id)
            rows = {r.id: r for r in con.execute(select(grants)).all()}
            states = dict(con.execute(select(charges.c.id, charges.c.state)).all())
            subs = {(r.grant_id, r.member_id): r for r in con.execute(select(member_budgets)).all()}
        assert set(rows) == set(self.grants)
        for grant_id, model in self.grants.items():
            row = rows[grant_id]
            assert 0 <= row.spent_micro <= row.budget_micro
            assert row.spent_micro == charged.get(grant_id, 0) == model.spent
            assert row.budget_micro == credited[grant_id] == model.credited
            assert 0 <= row.spent_delta_pico <= row.delta_pico
            assert row.spent_delta_pico == charged_delta.get(grant_id, 0) == model.spent_delta
            assert row.delta_pico == credited_delta[grant_id] == model.credited_delta
        for grant_id in self.touched:
            check = consistency(self.engine, grant_id)
            assert check.ok, check
            assert check.spent_micro == check.charged_micro == self.grants[grant_id].spent
            assert check.budget_micro == check.credited_micro == self.grants[grant_id].credited
        self.touched.clear()
        assert states == {c.id: c.state for c in self.charges.values()}
        for member in self.members.values():
            sub = subs.get((member.grant_id, member.id))
            if member.sub_budget is None:
                assert sub is None
                continue
            assert sub is not None
            assert sub.budget_micro == member.sub_budget
            assert sub.spent_micro == member.spent == by_member.get(member.id, 0)


LedgerMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
class TestLedgerProperties(LedgerMachine.TestCase):  # type: ignore[misc,valid-type]
    pass
