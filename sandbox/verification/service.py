"""Verification (核验): answering a verification, single or batch, from request to receipt.

The order of a verification is the point of this module (docs/verification.md):

1. the request's shape: template version, claim (``check_claim``), salt, purpose — public
   rules, answered with their own codes;
2. the **consent**: it exists, is the caller's tenant's, for this template id and version, this
   subject and purpose, is not expired or revoked, has uses left, and ``commit(claim, salt)``
   equals its claim commitment. Every failure — and an unknown subject, which simply has no
   consent — is the same :class:`~sandbox.errors.ConsentRefused`: one code, status, detail, and
   one latency envelope (a decoy template query runs on the refusal path; optional padding);
3. the **leakage decision** from request history only (``policies.leakage.check_request``),
   read in one transaction that writes nothing: the charge (bits, quota) is fixed before the
   executor runs; claim changes are refused and raise an alert;
4. the template query in the locked-down executor → ``decide`` → a :class:`Receipt` signed
   with the zone's current key;
5. the **answer transaction**, serialised per subject, the call's only commit: if anything was
   committed since the read, the decision is taken again under the lock (a line can only turn
   into a repeat or a refusal); then the answer's event (the charge), the consent's use, any
   alert, the receipt and the audit entry are written together. Only then does the
   :class:`~sandbox.verification.answers.Answer` go out, so no outcome leaves uncharged; a query
   that failed after its line was allowed is charged all the same.

A batch runs the same decisions line by line (lines see the lines before them), then one engine
query per template version for all its lines, signs the receipts (in a signer pool when large)
and writes everything in one answer transaction; its answer is a
:class:`~sandbox.verification.answers.BatchAnswer`.

The caller is an :class:`~sandbox.access.model.Actor` that must be a ``verifier`` member; the
answer transaction's audit entry is the request's own (:meth:`AuditLog.append`).

This module holds the flow itself — the calls, the timing envelope, the order of the steps,
the read and the answer transaction — and hands each step to the module that owns it:
:mod:`~sandbox.verification.requests` (the shape), :mod:`~sandbox.verification.decision` (2 and
3), :mod:`~sandbox.verification.outcomes` (the queries and the decoy),
:mod:`~sandbox.verification.documents` (receipts and signatures),
:mod:`~sandbox.verification.versions` (the dataset versions pinned) and
:mod:`~sandbox.verification.transactions` (holding the two transactions on each dialect).

No value ever leaves: the facts stay here, claims are stored only as a zone-keyed fingerprint
(ledger) and a salted commitment (consents, receipts), and logs carry ids and codes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine

from policies.templates.claims import check_claim
from policies.templates.loader import TemplateSet
from sandbox.access.model import SUBJECT_ID, Actor, Member, MemberRole
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now
from sandbox.engine.executor import Executor
from sandbox.errors import (
    ConsentRefused,
    ExecutionFailed,
    InvalidRequest,
    ServiceUnavailable,
    VeilError,
)
from sandbox.keys.signing import SigningKeys
from sandbox.store import db
from sandbox.store.schema import alerts, receipts, verification_events
from sandbox.vault.decrypted import Vault
from sandbox.verification.answers import Answer, BatchAnswer
from sandbox.verification.consents import add_uses
from sandbox.verification.decision import Context, decide_line, read_context
from sandbox.verification.documents import ReceiptDocuments, SignJob, receipt_row
from sandbox.verification.facts import FactsIndex
from sandbox.verification.issued import stored_documents
from sandbox.verification.lines import Line
from sandbox.verification.outcomes import Outcomes
from sandbox.verification.quota import add_quota_use
from sandbox.verification.receipts import claim_fingerprint, commit, subject_ref
from sandbox.verification.requests import (
    MAX_BATCH_LINES,
    PURPOSE,
    VerifyRequest,
    parse_salt,
)
from sandbox.verification.signer import Signer
from sandbox.verification.transactions import Transactions
from sandbox.verification.versions import PinnedVersions

__all__ = ["VerificationService"]

log = logging.getLogger("veil.verification")

_READ_ATTEMPTS: Final = 3  # reads of a call whose dataset version was not cached yet


@dataclass
class _State:
    """A call's decision between its read and its answer transaction."""

    lines: list[Line]  # the lines that were decided (their shape and dataset were fine)
    ctx: Context
    data_version: int | None  # SQLite's PRAGMA data_version at the read; None: decide again
    stored: dict[str, dict[str, object]]  # receipt id -> stored document, for own repeats


class VerificationService:
    """Verifications (single and batch) over the state store and the locked-down executor,
    built once with the state store's audit log. ``templates`` is loaded once at startup;
    ``vault`` decrypts sealed workspaces (None: version paths are plain files); ``facts``
    answers from the facts index when built (None: always a query); ``signer`` signs large
    batches' receipts (None: in the calling thread)."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        executor: Executor,
        templates: TemplateSet,
        keys: SigningKeys,
        zone_secret: bytes,
        *,
        envelope_ms: float = 0.0,
        signer: Signer | None = None,
        vault: Vault | None = None,
        facts: FactsIndex | None = None,
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "verification")
        self.templates = templates
        self.zone_secret = zone_secret
        self.envelope_s = envelope_ms / 1000.0
        self.outcomes = Outcomes(executor, keys, vault=vault, facts=facts)
        signer = signer if signer is not None else Signer(keys.ring().current, processes=0)
        self.documents = ReceiptDocuments(keys, signer)
        self.transactions = Transactions(engine)
        self.versions = PinnedVersions(engine)

    def subject_ref(self, subject_id: str) -> str:
        return subject_ref(subject_id, self.zone_secret)

    # -- verifying -------------------------------------------------------------------------------

    def verify(self, actor: Actor, request: VerifyRequest) -> Answer:
        """One verification for a ``verifier`` member: its outcome and signed receipt, or a
        typed refusal. Answers and refusals alike take at least the configured envelope."""
        member = actor.require_member(MemberRole.VERIFIER)
        started = time.monotonic()
        try:
            (line,) = self._run(actor, member, [Line(0, request)], single=True)
            if line.error is not None:
                raise line.error
            return Answer.of(line)
        finally:
            self._pad(started)

    def verify_batch(
        self, actor: Actor, requests: Sequence[VerifyRequest | VeilError]
    ) -> BatchAnswer:
        """Many verifications for a ``verifier`` member in one call, answered line by line in
        input order: an outcome and its receipt, or the line's error (``requests`` may hold
        the errors of lines that did not parse, answered in place)."""
        member = actor.require_member(MemberRole.VERIFIER)
        if len(requests) > MAX_BATCH_LINES:
            raise InvalidRequest(f"a batch has at most {MAX_BATCH_LINES} lines")
        lines = [
            Line(i, None, error=r) if isinstance(r, VeilError) else Line(i, r)
            for i, r in enumerate(requests)
        ]
        if lines:
            self._run(actor, member, lines, single=False)
        return BatchAnswer.of(lines)

    def _pad(self, started: float) -> None:
        if self.envelope_s > 0:
            left = self.envelope_s - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)

    # -- the flow --------------------------------------------------------------------------------

    def _run(self, actor: Actor, member: Member, lines: list[Line], *, single: bool) -> list[Line]:
        """The flow of the module docstring: the request's shape; the decision, read in one
        transaction; the queries and signatures outside any transaction; and the answer
        transaction, the call's only commit."""
        at = now()
        for line in lines:
            if line.ok:
                self._prepare(line)
        if single and lines[0].error is not None:
            raise lines[0].error  # a malformed request: public rules, nothing else to hide
        if not any(line.ok for line in lines):
            return lines
        for _ in range(_READ_ATTEMPTS):
            with contextlib.ExitStack() as stack:
                # SQLite: the call on one connection, so that the answer transaction can tell
                # from ``PRAGMA data_version`` whether another connection committed since the read.
                session = (
                    None
                    if self.transactions.postgres
                    else stack.enter_context(self.engine.connect())
                )
                state = self._read(session, member, lines, at, single=single)
                if isinstance(state, _State):
                    self._respond(session, actor, member, lines, at, state, single=single)
                    return lines
            for dataset in state:  # not cached yet: loaded with no connection held, then again
                self.versions.load(dataset)
        raise ServiceUnavailable("the dataset changed while the request was decided; try again")

    def _respond(
        self,
        session: Connection | None,
        actor: Actor,
        member: Member,
        lines: list[Line],
        at: datetime,
        state: _State,
        *,
        single: bool,
    ) -> None:
        """The queries, the receipts and the answer transaction for a decided call."""
        try:
            if single and isinstance(lines[0].error, ConsentRefused):
                self.outcomes.decoy(lines[0])
                jobs: list[SignJob] = []
            else:
                self._execute(lines, single=single)
                jobs = self.documents.make(member, lines, at, state.stored)
        except Exception:
            for line in state.lines:  # an uncertain outcome: what was allowed stays charged
                if line.ok and line.failed is None:
                    line.failed = ExecutionFailed("the verification did not complete")
            self._answer(session, actor, member, lines, at, state, [])
            raise
        self._answer(session, actor, member, lines, at, state, jobs)

    def _execute(self, lines: list[Line], *, single: bool) -> None:
        """The outcomes of the lines the decision allowed (:meth:`Outcomes.run`), between the
        read and the answer transaction."""
        self.outcomes.run(lines, single=single)

    def _prepare(self, line: Line) -> None:
        """Everything the request itself decides: template, claim, salt, commitment."""
        request = line.request
        assert request is not None
        try:
            template = self.templates.get(request.template, request.version)
            claim = check_claim(template, request.claim)
            if not SUBJECT_ID.match(request.subject):
                raise InvalidRequest("subject is a credit code (letters and digits)")
            if not PURPOSE.match(request.purpose):
                raise InvalidRequest("purpose is a lowercase code like credit_underwriting")
            commitment = None
            if claim is not None:
                commitment = commit(claim, parse_salt(request.salt))
        except VeilError as exc:
            line.error = exc
            return
        line.template = template
        line.claim = claim
        line.commitment = commitment
        line.subject_ref = self.subject_ref(request.subject)
        if claim is not None:
            line.fingerprint = claim_fingerprint(self.zone_secret, template.attribute, claim)

    # -- the decision: read, then answer -----------------------------------------------------------

    def _read(
        self,
        session: Connection | None,
        member: Member,
        lines: list[Line],
        at: datetime,
        *,
        single: bool,
    ) -> _State | set[str]:
        """Pin the datasets' current versions and decide every line from what the state store
        holds, in one transaction that writes nothing. Returns the datasets whose current
        version is not cached yet instead, having decided nothing."""
        live = [line for line in lines if line.ok]
        with self.transactions.transaction(session, reads_only=True) as con:
            missing = self.versions.pin(con, live)
            if missing:
                return missing
            if single and lines[0].error is not None:
                raise lines[0].error  # no such dataset: a public rule
            decided = [line for line in live if line.ok]
            ctx = read_context(con, member, decided, at)
            for line in decided:
                decide_line(member, line, at, ctx)
            own = [ln.receipt_id for ln in decided if ln.ok and ln.stored and ln.receipt_id]
            return _State(
                lines=decided,
                ctx=ctx,
                data_version=self.transactions.data_version(con),
                stored=stored_documents(con, own),
            )

    def _answer(
        self,
        session: Connection | None,
        actor: Actor,
        member: Member,
        lines: list[Line],
        at: datetime,
        state: _State,
        jobs: list[SignJob],
    ) -> None:
        """The answer transaction, the call's only commit: the decision again if the state
        store changed since it was read, then the ledger events (the charges), consent uses,
        alerts, receipts and the audit entry. Nothing reaches the caller before it commits, so
        no outcome leaves uncharged; a line whose query failed after it was allowed is charged
        all the same (an uncertain outcome is never refunded). A large batch's receipts are
        still being signed (``jobs``) while the events are written. The audit entry, made by
        ``actor``, is the request's own."""
        transactions = self.transactions
        with transactions.transaction(session) as con:
            transactions.lock(con, member.tenant_id, {line.subject_ref for line in state.lines})
            if state.data_version is None or transactions.data_version(con) != state.data_version:
                self.documents.collect(jobs)
                self._redecide(con, member, at, state)
                jobs = self.documents.make(member, lines, at, state.stored)
            ctx = state.ctx
            _uncharge_unread(state)
            if ctx.events:
                db.insert_many(con, verification_events, ctx.events)
                add_quota_use(con, ctx.events)
            add_uses(con, ctx.bumped, ctx.held)
            if ctx.alerts:
                db.insert_many(con, alerts, ctx.alerts)
            self.documents.collect(jobs)
            issued = at.replace(microsecond=0)
            new_receipts = [
                receipt_row(member, line, issued)
                for line in state.lines
                if line.ok and line.failed is None and line.signed is not None
            ]
            if new_receipts:
                db.insert_many(con, receipts, new_receipts)
            for line in state.lines:
                if line.ok and line.failed is not None:
                    line.error, line.document = line.failed, None
            # last: the request's own entry, committed with the answer
            self.audit.append(con, _audit_event(lines, ctx.events), actor)
        for alert in ctx.alerts:
            log.warning(
                "ALERT verification claim_change alert=%s tenant=%s member=%s template=%s "
                "subject_ref=%s",
                alert["id"],
                alert["tenant_id"],
                alert["member_id"],
                alert["template_id"],
                alert["subject_ref"],
            )

    def _redecide(self, con: Connection, member: Member, at: datetime, state: _State) -> None:
        """Decide again, under the lock, the lines the read allowed: meanwhile another request
        may have been answered, or a consent used or revoked. History only grows and consents
        only tighten, so a line can only turn into a repeat or a refusal; lines refused at the
        read stay refused (their alerts stand). An outcome a line already has is the answer to
        the same question on the same data, so it stays valid whatever the new decision."""
        allowed = [line for line in state.lines if line.ok]
        ctx = read_context(con, member, allowed, at)
        ctx.alerts = list(state.ctx.alerts)
        for line in allowed:
            known = line.outcome
            line.receipt_id, line.outcome, line.stored, line.consent = None, None, False, None
            decide_line(member, line, at, ctx)
            if line.ok and line.outcome is None:
                line.outcome = known
        state.ctx = ctx
        own = [
            line.receipt_id
            for line in allowed
            if line.ok and line.stored and line.receipt_id and line.receipt_id not in state.stored
        ]
        state.stored.update(stored_documents(con, own))


def _uncharge_unread(state: _State) -> None:
    """Take back the charges of the lines whose query failed before any data was read (the
    workspace could not be provided, no worker could take the query): their events (the leakage
    bits and the quota unit) and their consent's use. The outcome of such a line is not
    uncertain — there is none — so, like a query's reservation, its charge is given back. Lines
    decided after it in the same call were decided with its event counted: never in their
    favour."""
    unread = {
        line.receipt_id
        for line in state.lines
        if line.ok and line.failed is not None and line.unread
    }
    unread.discard(None)
    if not unread:
        return
    ctx, kept = state.ctx, []
    for event in ctx.events:
        if event["receipt_id"] not in unread:
            kept.append(event)
            continue
        consent_id = event["consent_id"]
        ctx.bumped[consent_id] -= 1
        if ctx.bumped[consent_id] <= ctx.held[consent_id].uses:
            del ctx.bumped[consent_id]
    ctx.events = kept


def _audit_event(lines: list[Line], events: list[dict[str, Any]]) -> Event:
    """The audit entry of one answer transaction: a single verification's ids and code, or a
    batch's counts; subjects and claims only sealed (docs/audit.md)."""
    cost = {
        "bits_milli": sum(e["bits_charged"] for e in events),
        "quota": sum(e["quota_units"] for e in events),
    }
    per_line = [
        [
            ln.index,
            ln.request.subject if ln.request else None,
            ln.request.claim if ln.request else None,
            ln.request.consent if ln.request else None,
            ln.receipt_id,
            ln.error.error_code if ln.error is not None else "ok",
        ]
        for ln in lines
    ]
    if len(lines) == 1:
        (line,) = lines
        code = line.error.error_code if line.error is not None else "ok"
        template = line.template
        return Event(
            "verification",
            "verification.decide",
            code=code,
            refs={
                "template": template.id if template else None,
                "template_version": template.version if template else None,
                "consent": line.request.consent if line.request else None,
                "purpose": line.request.purpose if line.request else None,
                "receipt": line.receipt_id,
                "subject_ref": line.subject_ref or None,
                "repeat": line.stored,
            },
            cost=cost,
            sealed={"subject": per_line[0][1], "claim": per_line[0][2]},
        )
    codes: dict[str, int] = defaultdict(int)
    for row in per_line:
        codes[str(row[5])] += 1
    return Event(
        "verification",
        "verification.batch",
        refs={"lines": len(lines), "codes": dict(codes)},
        cost=cost,
        # [index, subject, claim, consent, receipt, code] per line
        sealed={"lines": per_line},
    )
