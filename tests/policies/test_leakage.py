"""The leakage ledger's decisions, and simulated attackers who try to pin a hidden revenue.

The attack tests run the real decision logic (``check_request``/``record``), the real templates
and the real ``decide`` against a hidden true value, and measure what the attacker learned as the
mutual information between the hidden value and the answers it got: the entropy of its answer
transcripts over a uniform prior on a grid of values. For a deterministic strategy that equals
the average over targets of log2(initial candidates / candidates still consistent at the end),
which is also computed, as a check.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from policies.errors import ClaimChangeRefused, LeakageCapReached, Refusal, TenantQuotaExceeded
from policies.leakage import (
    LeakageDecision,
    VerificationEvent,
    VerificationRequest,
    check_request,
    count_quota,
    record,
    window_start,
)
from policies.templates.claims import Claim
from policies.templates.decide import decide
from policies.templates.loader import TemplateSet, load_templates
from policies.templates.model import MATCH, Template
from sandbox.verification.receipts import claim_fingerprint

ROOT = Path(__file__).resolve().parents[2]
SECRET = bytes(range(32))
SUBJECT = "a" * 64
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return load_templates(ROOT / "sandbox" / "demo" / "data" / "templates")


def fingerprint(template: Template, claim: Claim) -> str | None:
    return None if claim is None else claim_fingerprint(SECRET, template.attribute, claim)


def request(
    template: Template,
    claim: Claim,
    *,
    tenant: str = "bank-a",
    at: datetime = T0,
    subject: str = SUBJECT,
    version: str = "v1",
) -> VerificationRequest:
    return VerificationRequest(subject, tenant, fingerprint(template, claim), version, at)


@dataclass
class Ledger:
    """An in-memory stand-in for the state store's verification events."""

    events: list[VerificationEvent] = field(default_factory=list)
    alerts: int = 0

    def ask(
        self, template: Template, req: VerificationRequest, *, quota: int | None = None
    ) -> LeakageDecision:
        used = count_quota(self.events, req.tenant_id, template.id, window_start(template, req.at))
        decision = check_request(template, req, self.events, used, quota=quota)
        if decision.allowed:
            self.events.append(record(template, req, decision, receipt_id=f"r{len(self.events)}"))
        else:
            self.alerts += decision.alert
        return decision


# ---------------------------------------------------------------------------------------------
# The rules, one at a time
# ---------------------------------------------------------------------------------------------


def test_first_answer_is_charged(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    d = Ledger().ask(rev, request(rev, 5_000_000))
    assert (d.allowed, d.reason, d.bits, d.quota, d.sticky, d.alert) == (
        True,
        None,
        1000,
        1,
        False,
        False,
    )
    assert (d.spent_bits, d.cap_bits, d.window_start) == (0, 4000, T0 - timedelta(days=30))
    with pytest.raises(ValueError):
        d.error()


def test_sticky_repeats(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    ledger = Ledger()
    first = ledger.ask(rev, request(rev, 5_000_000))
    assert first.allowed
    # The same tenant again: free, same answer and receipt.
    again = ledger.ask(rev, request(rev, 5_000_000, at=T0 + timedelta(hours=1)))
    assert (again.allowed, again.sticky, again.bits, again.quota) == (True, True, 0, 0)
    assert again.reuse is not None and again.reuse.receipt_id == "r0"
    # Another tenant with the same claim (another salt, same fingerprint): no new bits, but it
    # uses its own quota and gets its own receipt.
    other = ledger.ask(rev, request(rev, 5_000_000, tenant="bank-b"))
    assert (other.allowed, other.sticky, other.bits, other.quota) == (True, True, 0, 1)
    assert other.reuse is not None and other.reuse.tenant_id == "bank-a"
    assert sum(e.bits_charged for e in ledger.events) == 1000
    assert count_quota(ledger.events, "bank-a", rev.id, T0 - timedelta(days=30)) == 1
    assert count_quota(ledger.events, "bank-b", rev.id, T0 - timedelta(days=30)) == 1
    # A new dataset version is a new question: charged again (same claim, so no claim change).
    newer = ledger.ask(rev, request(rev, 5_000_000, version="v2"))
    assert (newer.allowed, newer.sticky, newer.bits) == (True, False, 1000)


def test_claim_change_is_refused_and_alerts(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    ledger = Ledger()
    assert ledger.ask(rev, request(rev, 5_000_000)).allowed
    for tenant in ("bank-a", "bank-b"):  # the same bank, or a colluding one
        d = ledger.ask(rev, request(rev, 4_000_000, tenant=tenant, at=T0 + timedelta(days=29)))
        assert (d.allowed, d.reason, d.alert, d.bits, d.quota) == (
            False,
            Refusal.CLAIM_CHANGE,
            True,
            0,
            0,
        )
        error = d.error()
        assert isinstance(error, ClaimChangeRefused)
        assert (error.error_code, error.status) == ("claim_change", 409)
        assert error.problem()["code"] == "claim_change"
    assert ledger.alerts == 2
    # After the window the new claim is a fresh start.
    later = ledger.ask(rev, request(rev, 4_000_000, at=T0 + timedelta(days=30, seconds=1)))
    assert later.allowed and later.bits == 1000


def test_templates_without_a_claim_never_change_claims(templates: TemplateSet) -> None:
    rev, band = templates.get("REV_TOLERANCE"), templates.get("REV_BAND")
    ledger = Ledger()
    assert ledger.ask(rev, request(rev, 5_000_000)).allowed
    d = ledger.ask(band, request(band, None))
    assert d.allowed and d.bits == 2322 and d.spent_bits == 1000


def test_max_claims_allows_a_few_distinct_claims(templates: TemplateSet) -> None:
    tax = templates.get("TAX_CONTINUITY")  # max_claims = 3: every N may be asked
    ledger = Ledger()
    for n in (24, 12, 6):
        assert ledger.ask(tax, request(tax, n)).allowed
    assert ledger.ask(tax, request(tax, 6, tenant="bank-b")).sticky


def test_leakage_cap_across_templates_and_tenants(templates: TemplateSet) -> None:
    rev, band = templates.get("REV_TOLERANCE"), templates.get("REV_BAND")
    # Tolerance shrinking: the same claim at 10%, 5%, 2%, 1% — no claim change, but each costs.
    versions = [rev, *(replace(rev, version=v, tolerance=Decimal(t)) for v, t in
                        [(2, "0.05"), (3, "0.02"), (4, "0.01")])]  # fmt: skip
    ledger = Ledger()
    assert ledger.ask(band, request(band, None, tenant="bank-a")).allowed  # 2322
    assert ledger.ask(versions[0], request(rev, 5_000_000, tenant="bank-b")).allowed  # 3322
    d = ledger.ask(versions[1], request(rev, 5_000_000, tenant="bank-c"))
    assert (d.allowed, d.reason, d.spent_bits, d.alert) == (
        False,
        Refusal.LEAKAGE_CAP,
        3322,
        False,
    )
    assert isinstance(d.error(), LeakageCapReached) and d.error().status == 429
    # Other subjects and other attributes have their own ledgers.
    assert ledger.ask(versions[1], request(rev, 5_000_000, subject="b" * 64)).allowed
    status = templates.get("ENT_STATUS")
    assert ledger.ask(status, request(status, None)).allowed


def test_tenant_quota(templates: TemplateSet) -> None:
    status = templates.get("ENT_STATUS")
    ledger = Ledger()
    for i in range(3):
        assert ledger.ask(status, request(status, None, subject=f"{i:064x}"), quota=3).allowed
    d = ledger.ask(status, request(status, None, subject="f" * 64), quota=3)
    assert (d.allowed, d.reason) == (False, Refusal.TENANT_QUOTA)
    assert isinstance(d.error(), TenantQuotaExceeded) and d.error().error_code == "tenant_quota"
    # The tenant's own repeats stay free even with the quota used up; others' quotas are theirs.
    assert ledger.ask(status, request(status, None, subject=f"{0:064x}"), quota=3).sticky
    assert ledger.ask(status, request(status, None, subject="f" * 64, tenant="bank-b")).allowed
    # The template's quota applies without an override.
    used = count_quota(ledger.events, "bank-a", status.id, T0 - timedelta(days=30))
    assert used == 3
    req = request(status, None, subject="e" * 64)
    assert check_request(status, req, [], status.quota).reason == Refusal.TENANT_QUOTA
    assert check_request(status, req, [], status.quota - 1).allowed


def test_order_of_reasons(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    history = [
        record(rev, request(rev, 1_000_000), check_request(rev, request(rev, 1_000_000), [], 0))
    ]
    # A new claim with the cap and the quota also exhausted: claim_change wins (it alerts).
    tight = replace(rev, max_bits=1000)
    d = check_request(tight, request(rev, 2_000_000), history, rev.quota)
    assert d.reason == Refusal.CLAIM_CHANGE
    loose = replace(tight, max_claims=5)
    assert check_request(loose, request(rev, 2_000_000), history, rev.quota).reason == (
        Refusal.LEAKAGE_CAP
    )


def test_times_must_be_aware(templates: TemplateSet) -> None:
    rev = templates.get("REV_TOLERANCE")
    with pytest.raises(ValueError):
        VerificationRequest(SUBJECT, "bank-a", None, "v1", datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        window_start(rev, datetime(2026, 1, 1))


def test_refusals_do_not_depend_on_the_true_value(templates: TemplateSet) -> None:
    """The same requests get the same allow/refuse decisions whatever the hidden value."""
    rev, band = templates.get("REV_TOLERANCE"), templates.get("REV_BAND")
    plan = [(band, None), (rev, 3_000_000), (rev, 3_000_000), (rev, 7_000_000), (band, None)]
    seen = set()
    for truth in (Decimal(800_000), Decimal(3_100_000), Decimal(90_000_000)):
        ledger = Ledger()
        decisions = []
        for i, (template, claim) in enumerate(plan):
            d = ledger.ask(template, request(template, claim, at=T0 + timedelta(minutes=i)))
            decisions.append((d.allowed, d.reason, d.bits))
            if d.allowed:
                decide(template, (12, truth), claim)  # the answer is computed after the decision
        seen.add(tuple(decisions))
    assert len(seen) == 1


# ---------------------------------------------------------------------------------------------
# Simulated attackers
# ---------------------------------------------------------------------------------------------

# The prior: the hidden 12-month revenue is one of 256 log-spaced values between 1M and 100M.
GRID = sorted({round(10**6 * 100 ** (i / 255)) for i in range(256)})
assert len(GRID) == 256


def match_range(candidates: Sequence[int], claim: int) -> tuple[int, int]:
    """Indices [lo, hi) of the candidates v that REV_TOLERANCE (±10%) answers "match" for:
    |claim - v| <= v / 10  <=>  10 claim <= 11 v  and  9 v <= 10 claim."""
    lo = bisect.bisect_left(candidates, 10 * claim, key=lambda v: 11 * v)
    hi = bisect.bisect_right(candidates, 10 * claim, key=lambda v: 9 * v)
    return lo, max(lo, hi)


def best_claim(candidates: Sequence[int]) -> int:
    """The adaptive attacker's next claim: the one whose "match" set holds as close to half of
    the remaining candidates as possible (a binary search once the range is narrow enough, a
    scan before). Windows whose low end sits at each candidate, swept with two pointers."""
    target = len(candidates) / 2
    best, best_gap = candidates[0], math.inf
    hi = 0
    for i, v in enumerate(candidates):
        claim = (11 * v) // 10  # the widest window whose low end is at v
        hi = max(hi, i)
        while hi < len(candidates) and 9 * candidates[hi] <= 10 * claim:
            hi += 1
        gap = abs((hi - i) - target)
        if gap < best_gap:
            best, best_gap = claim, gap
    return best


Ask = Callable[[Template, Claim, int, int], "str | None"]


def zone(templates_: Sequence[Template], tenants: Sequence[str], *, days_per_step: int = 0) -> Ask:
    """An oracle behind the real decision logic: returns the outcome, or None when every tenant
    was refused. Step ``i`` happens ``i`` minutes (plus ``days_per_step`` days) after T0."""
    ledger = Ledger()

    def ask(template: Template, claim: Claim, truth: int, step: int) -> str | None:
        at = T0 + timedelta(minutes=step, days=step * days_per_step)
        for tenant in tenants:  # colluders take turns: the next one tries when one is refused
            d = ledger.ask(template, request(template, claim, tenant=tenant, at=at))
            if d.allowed:
                return decide(template, (12, Decimal(truth)), claim)
        return None

    ask.ledger = ledger  # type: ignore[attr-defined]
    return ask


def unprotected(template: Template, claim: Claim, truth: int, step: int) -> str | None:
    return decide(template, (12, Decimal(truth)), claim)


@dataclass
class Result:
    transcript: tuple[tuple[str, Claim, str], ...]
    remaining: int  # candidates still consistent with every answer
    answered_claims: int  # distinct REV_TOLERANCE claims answered
    alerts: int


def run_attack(
    ask_factory: Callable[[], Ask],
    truth: int,
    rev: Template,
    band: Template | None,
    steps: int,
    *,
    patient: bool = False,
) -> Result:
    ask = ask_factory()
    candidates = list(GRID)
    transcript: list[tuple[str, Claim, str]] = []
    claims: set[int] = set()
    step = 0
    if band is not None:
        out = ask(band, None, truth, step)
        step += 1
        if out is not None:
            transcript.append((band.id, None, out))
            candidates = [v for v in candidates if decide(band, (12, Decimal(v)), None) == out]
    while len(candidates) > 1 and step < steps:
        claim = best_claim(candidates)
        out = ask(rev, claim, truth, step)
        step += 1
        if out is None:
            if patient:
                continue  # refused: a patient attacker tries again later (in a later window)
            break  # every colluder was refused; asking again at once changes nothing
        transcript.append((rev.id, claim, out))
        claims.add(claim)
        lo, hi = match_range(candidates, claim)
        candidates = candidates[lo:hi] if out == MATCH else candidates[:lo] + candidates[hi:]
    ledger = getattr(ask, "ledger", None)
    return Result(tuple(transcript), len(candidates), len(claims), ledger.alerts if ledger else 0)


def information(results: Sequence[Result]) -> tuple[float, float]:
    """(entropy of the transcripts, mean log2(initial / final consistent candidates)), in bits,
    over a uniform prior on GRID."""
    counts = Counter(r.transcript for r in results)
    n = len(results)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    realised = sum(math.log2(len(GRID) / r.remaining) for r in results) / n
    return entropy, realised


def attack_all(
    ask_factory: Callable[[], Ask], rev: Template, band: Template | None = None, steps: int = 60
) -> list[Result]:
    return [run_attack(ask_factory, truth, rev, band, steps) for truth in GRID]


def test_unprotected_attack_pins_the_value(templates: TemplateSet) -> None:
    """Without the ledger, the adaptive search identifies every hidden value exactly: 8 bits."""
    results = attack_all(lambda: unprotected, templates.get("REV_TOLERANCE"))
    entropy, realised = information(results)
    assert all(r.remaining == 1 for r in results)
    assert entropy == pytest.approx(8.0) and realised == pytest.approx(entropy)
    assert max(r.answered_claims for r in results) > 20


@pytest.mark.parametrize("tenants", [("bank-a",), ("bank-a", "bank-b")], ids=["one", "colluding"])
def test_attack_with_claim_change_detection(
    templates: TemplateSet, tenants: tuple[str, ...]
) -> None:
    """One bank, or two colluding banks, against the demo templates: one claim per window."""
    rev = templates.get("REV_TOLERANCE")
    cap_bits = rev.max_bits / 1000
    results = attack_all(lambda: zone([rev], tenants), rev)
    entropy, realised = information(results)
    assert realised == pytest.approx(entropy)
    assert entropy <= cap_bits and entropy <= 1.0
    assert max(r.answered_claims for r in results) == 1
    assert all(r.alerts > 0 for r in results if r.remaining > 1)


@pytest.mark.parametrize("tenants", [("bank-a",), ("bank-a", "bank-b")], ids=["one", "colluding"])
@pytest.mark.parametrize("with_band", [False, True], ids=["tolerance", "band+tolerance"])
def test_attack_against_the_cap_alone(
    templates: TemplateSet, tenants: tuple[str, ...], with_band: bool
) -> None:
    """Claim-change detection switched off (any number of distinct claims): the per-subject cap
    across all tenants still bounds what is learned to ``max_bits`` per window."""
    rev = replace(templates.get("REV_TOLERANCE"), max_claims=1000)
    band = replace(templates.get("REV_BAND"), max_claims=1000) if with_band else None
    cap_bits = rev.max_bits / 1000
    results = attack_all(lambda: zone([rev], tenants), rev, band)
    entropy, realised = information(results)
    assert realised == pytest.approx(entropy)
    assert entropy <= cap_bits
    spent = (band.bits if band else 0) + rev.bits * max(r.answered_claims for r in results)
    assert spent <= rev.max_bits
    assert max(r.answered_claims for r in results) == (1 if with_band else 4)


def test_patient_attacker_is_rate_limited(templates: TemplateSet) -> None:
    """The cap is per window: an attacker who waits learns at most ``max_bits`` per window, so
    pinning the value takes many windows (and every new claim raises an alert)."""
    rev = templates.get("REV_TOLERANCE")
    windows = 3
    steps_per_window = 10
    # Each step is 3 days + 1 minute apart: 10 steps ≈ one 30-day window.
    results = [
        run_attack(lambda: zone([rev], ("bank-a", "bank-b"), days_per_step=3), truth, rev, None,
                   windows * steps_per_window, patient=True)
        for truth in GRID
    ]  # fmt: skip
    entropy, _ = information(results)
    assert max(r.answered_claims for r in results) <= windows
    assert entropy <= windows * rev.max_bits / 1000
    assert entropy < 8.0
