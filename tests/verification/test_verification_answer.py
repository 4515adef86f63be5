"""The answer transaction (docs/verification.md, "How a request is decided"): one commit per
call; the decision taken again when another request was answered, or a consent changed, between
the read and the answer; and a query that failed after its line was allowed, charged all the
same and answered on retry with the receipt it was charged for."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from policies.errors import ClaimChangeRefused
from policies.templates.loader import load_templates
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.errors import (
    ConsentRefused,
    ExecutionFailed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    VeilError,
)
from sandbox.store.schema import alerts, consents, receipts
from sandbox.verification.answers import Answer, BatchSummary, LineError
from sandbox.verification.lines import Line
from sandbox.verification.receipts import new_salt
from sandbox.verification.requests import VerifyRequest
from sandbox.verification.service import VerificationService
from tests.support.app import engine_of
from tests.support.demo import DEMO_TEMPLATES
from tests.support.verification import (
    PURPOSE,
    REVENUE,
    consent_service,
    events,
    grant,
    member,
    service,
)


class Racing(VerificationService):
    """Runs ``race`` once between the decision's read and its answer transaction, as if another
    request had been answered (or a consent changed) in between."""

    race: Callable[[], object] | None = None
    redecided = 0

    def _execute(self, lines: list[Line], *, single: bool) -> None:
        race, self.race = self.race, None
        if race is not None:
            race()
        super()._execute(lines, single=single)

    def _redecide(self, *args: Any, **kwargs: Any) -> None:
        self.redecided += 1
        super()._redecide(*args, **kwargs)


def twin(client: TestClient, executor: Executor | None = None) -> Racing:
    """A second service over the app's state store, audit log, keys and workspaces."""
    base = service(client)
    return Racing(
        base.engine,
        base.audit,
        executor or base.outcomes.executor,
        base.templates,
        base.documents.keys,
        base.zone_secret,
        signer=base.documents.signer,
        vault=base.outcomes.vault,
    )


def three_lines(client: TestClient, keys: dict[str, str], subject: str) -> list[VerifyRequest]:
    """A batch of three consented questions on ``subject`` (no claim, a choice, a number)."""
    lines = []
    for template, claim in (("ENT_STATUS", None), ("ENT_AGE", 1), ("TAX_CONTINUITY", 6)):
        consent, salt = grant(client, keys, template, claim)
        lines.append(
            VerifyRequest(
                template=template,
                subject=subject,
                consent=consent,
                purpose=PURPOSE,
                claim=claim,
                salt=salt.hex() if claim is not None else None,
            )
        )
    return lines


def uses(client: TestClient, consent: str) -> int:
    with engine_of(client).connect() as con:
        found: int = con.execute(select(consents.c.uses).where(consents.c.id == consent)).scalar()
    return found


def stored_receipts(client: TestClient) -> list[str]:
    with engine_of(client).connect() as con:
        return [r.id for r in con.execute(select(receipts.c.id))]


@contextmanager
def write_commits(engine: Engine) -> Iterator[list[int]]:
    """Counts the commits of transactions that wrote something (``[count]``)."""
    count = [0]
    wrote: set[int] = set()

    def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            wrote.add(id(conn))

    def committed(conn: Any) -> None:
        if id(conn) in wrote:
            wrote.discard(id(conn))
            count[0] += 1

    def rolled_back(conn: Any) -> None:
        wrote.discard(id(conn))

    listeners = [
        ("before_cursor_execute", before),
        ("commit", committed),
        ("rollback", rolled_back),
    ]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        yield count
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)


def test_an_answer_is_one_commit(client, keys):
    """The charge, the consent's use, the receipt and the audit entry are one durable commit;
    a batch is one commit too."""
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    request = VerifyRequest(
        template="REV_TOLERANCE",
        subject=subject,
        consent=consent,
        purpose=PURPOSE,
        claim=REVENUE,
        salt=salt.hex(),
    )
    engine = engine_of(client)
    with write_commits(engine) as count:
        answer = service(client).verify(verifier, request)
    assert count == [1]
    assert [e.receipt_id for e in events(client)] == [answer.receipt.receipt_id]
    assert stored_receipts(client) == [answer.receipt.receipt_id]

    with write_commits(engine) as count:
        assert service(client).verify(verifier, request) == answer  # sticky: same receipt
    assert count[0] <= 1  # the audit entry, if the app keeps a log

    lines = three_lines(client, keys, subject)
    with write_commits(engine) as count:
        batch = service(client).verify_batch(verifier, lines)
    assert batch.summary == BatchSummary(lines=3, answered=3, refused=0)
    assert count == [1]


def test_the_same_question_answered_meanwhile_gives_its_receipt(client, keys):
    """Answered by a concurrent request of the same tenant between the read and the answer:
    the decision, taken again, is a repeat — that receipt, no second charge, no second use."""
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, _ = grant(client, keys, "ENT_STATUS", max_uses=3)
    request = VerifyRequest(
        template="ENT_STATUS", subject=subject, consent=consent, purpose=PURPOSE
    )
    first: list[Answer] = []
    racing = twin(client)
    racing.race = lambda: first.append(service(client).verify(verifier, request))
    answer = racing.verify(verifier, request)
    assert racing.redecided == 1
    assert [answer] == first
    (recorded,) = events(client)
    assert recorded.receipt_id == answer.receipt.receipt_id
    assert uses(client, consent) == 1
    assert stored_receipts(client) == [recorded.receipt_id]


def test_a_claim_answered_meanwhile_makes_another_claim_a_claim_change(client, keys):
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    salt = new_salt()
    claims = {REVENUE: grant(client, keys, "REV_TOLERANCE", REVENUE, salt=salt)[0]}
    claims[2 * REVENUE] = grant(client, keys, "REV_TOLERANCE", 2 * REVENUE, salt=salt)[0]

    def ask(claim: int) -> VerifyRequest:
        return VerifyRequest(
            template="REV_TOLERANCE",
            subject=subject,
            consent=claims[claim],
            purpose=PURPOSE,
            claim=claim,
            salt=salt.hex(),
        )

    racing = twin(client)
    racing.race = lambda: service(client).verify(verifier, ask(REVENUE))
    with pytest.raises(ClaimChangeRefused):
        racing.verify(verifier, ask(2 * REVENUE))
    assert racing.redecided == 1
    (recorded,) = events(client)
    assert recorded.consent_id == claims[REVENUE]
    assert uses(client, claims[2 * REVENUE]) == 0
    with engine_of(client).connect() as con:
        assert len(con.execute(select(alerts)).all()) == 1
    assert len(stored_receipts(client)) == 1


def test_a_consent_revoked_meanwhile_refuses_the_answer(client, keys):
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, salt = grant(client, keys, "ENT_AGE", 2)
    request = VerifyRequest(
        template="ENT_AGE",
        subject=subject,
        consent=consent,
        purpose=PURPOSE,
        claim=2,
        salt=salt.hex(),
    )
    racing = twin(client)
    racing.race = lambda: consent_service(client).revoke_consent(
        member(client, keys["subject"]), consent
    )
    with pytest.raises(ConsentRefused):
        racing.verify(verifier, request)
    assert racing.redecided == 1
    assert events(client) == []
    assert stored_receipts(client) == []


def test_a_batch_line_answered_meanwhile_gets_that_receipt(client, keys):
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    lines = three_lines(client, keys, subject)
    first: list[Answer] = []
    racing = twin(client)
    racing.race = lambda: first.append(service(client).verify(verifier, lines[1]))
    batch = racing.verify_batch(verifier, lines)
    assert racing.redecided == 1
    assert batch.summary == BatchSummary(lines=3, answered=3, refused=0)
    assert batch.results[1].receipt == first[0].receipt
    assert len(events(client)) == 3
    assert uses(client, lines[1].consent) == 1
    assert len(stored_receipts(client)) == 3


def test_a_failed_query_is_charged_and_its_retry_gets_that_receipt(client, keys, tmp_path: Path):
    """The query fails once the engine ran (the worker refuses its result: a byte cap of 1):
    the charge stays (an uncertain outcome is never refunded), no receipt is stored; the
    tenant's retry is a repeat of the charged question, answered now under the receipt id it
    was charged for."""
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, _ = grant(client, keys, "ENT_STATUS", max_uses=1)
    request = VerifyRequest(
        template="ENT_STATUS", subject=subject, consent=consent, purpose=PURPOSE
    )
    limits = ExecutorLimits(workers=1, threads=1, max_result_bytes=1)
    with Executor(limits, tmp_path) as refusing, pytest.raises(ExecutionFailed):
        twin(client, refusing).verify(verifier, request)
    (charged,) = events(client)
    assert charged.bits_charged == 1000 and charged.quota_units == 1
    assert uses(client, consent) == 1
    assert stored_receipts(client) == []

    retry = service(client).verify(verifier, request)
    assert retry.receipt.receipt_id == charged.receipt_id
    assert len(events(client)) == 1
    assert uses(client, consent) == 1
    assert stored_receipts(client) == [charged.receipt_id]


def test_a_query_no_worker_took_is_not_charged(client, keys, tmp_path: Path):
    """The executor cannot take the query (never started): nothing was read, so nothing is
    charged — no event, no quota, no use of the consent — and the retry is a new answer."""
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, _ = grant(client, keys, "ENT_STATUS", max_uses=1)
    request = VerifyRequest(
        template="ENT_STATUS", subject=subject, consent=consent, purpose=PURPOSE
    )
    stopped = Executor(ExecutorLimits(workers=1), tmp_path)  # never started: every run fails
    with pytest.raises(ServiceUnavailable):
        twin(client, stopped).verify(verifier, request)
    assert events(client) == []
    assert uses(client, consent) == 0
    retry = service(client).verify(verifier, request)
    (charged,) = events(client)
    assert retry.receipt.receipt_id == charged.receipt_id
    assert uses(client, consent) == 1


# -- PostgreSQL: the answer transaction always decides again there ------------------------------


def test_on_postgresql_answers_repeats_and_races_decide_alike(pg_client, pg_keys):
    client, keys = pg_client, pg_keys
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, _ = grant(client, keys, "ENT_STATUS", max_uses=3)
    request = VerifyRequest(
        template="ENT_STATUS", subject=subject, consent=consent, purpose=PURPOSE
    )
    with write_commits(engine_of(client)) as count:
        answer = service(client).verify(verifier, request)
    assert count == [1]
    assert service(client).verify(verifier, request) == answer

    salt = new_salt()
    claims = {c: grant(client, keys, "REV_TOLERANCE", c * REVENUE, salt=salt)[0] for c in (1, 2)}

    def ask(claim: int) -> VerifyRequest:
        return VerifyRequest(
            template="REV_TOLERANCE",
            subject=subject,
            consent=claims[claim],
            purpose=PURPOSE,
            claim=claim * REVENUE,
            salt=salt.hex(),
        )

    racing = twin(client)
    racing.race = lambda: service(client).verify(verifier, ask(1))
    with pytest.raises(ClaimChangeRefused):
        racing.verify(verifier, ask(2))
    assert racing.redecided == 1
    assert len(events(client)) == 2
    assert len(stored_receipts(client)) == 2


def test_the_batch_answer_carries_the_stored_receipts(client, keys):
    """A batch's answer holds each receipt exactly as signed and stored, a question asked twice
    in it shares one receipt, and asked again every line is a repeat with the same receipts."""
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    status, _ = grant(client, keys, "ENT_STATUS", max_uses=2)
    age, salt = grant(client, keys, "ENT_AGE", 1)
    lines: list[VerifyRequest | VeilError] = [
        VerifyRequest(template="ENT_STATUS", subject=subject, consent=status, purpose=PURPOSE),
        VerifyRequest(
            template="ENT_AGE",
            subject=subject,
            consent=age,
            purpose=PURPOSE,
            claim=1,
            salt=salt.hex(),
        ),
        InvalidRequest("a line has 7 fields"),
        VerifyRequest(template="ENT_STATUS", subject=subject, consent=status, purpose=PURPOSE),
    ]
    answer = service(client).verify_batch(verifier, lines)
    assert answer.summary == BatchSummary(lines=4, answered=3, refused=1)
    assert answer.results[2].error == LineError("invalid_request", 400, "a line has 7 fields")
    assert answer.results[2].receipt is None and answer.results[2].outcome is None
    assert answer.results[3].receipt == answer.results[0].receipt  # one question
    with engine_of(client).connect() as con:
        stored = {r.id: json.loads(r.document) for r in con.execute(select(receipts))}
    for result in (answer.results[0], answer.results[1]):
        assert result.receipt is not None and result.error is None
        assert stored[result.receipt.receipt_id] == result.receipt.document()
        assert result.outcome == result.receipt.outcome
    assert service(client).verify_batch(verifier, lines) == answer


def test_a_template_on_a_dataset_without_a_version_is_not_found(client, keys, tmp_path: Path):
    """The dataset's current version is read with the decision: none is ``not_found`` (a public
    rule, raised at once for one request, in place for a batch line)."""
    for source in DEMO_TEMPLATES.glob("*.toml"):
        shutil.copy(source, tmp_path / source.name)
    text = (DEMO_TEMPLATES / "ENT_STATUS.toml").read_text(encoding="utf-8")
    text = text.replace('id = "ENT_STATUS"', 'id = "ELSEWHERE_STATUS"')
    text = text.replace('dataset = "enterprise"', 'dataset = "elsewhere"')
    text = text.replace('attribute = "status"', 'attribute = "elsewhere_status"')
    (tmp_path / "ELSEWHERE_STATUS.toml").write_text(text, encoding="utf-8")
    base = service(client)
    elsewhere = VerificationService(
        base.engine,
        base.audit,
        base.outcomes.executor,
        load_templates(tmp_path),
        base.documents.keys,
        base.zone_secret,
        vault=base.outcomes.vault,
    )
    verifier, subject = member(client, keys["verifier"]), keys["subject_id"]
    consent, _ = grant(client, keys, "ENT_STATUS")
    asked = VerifyRequest(
        template="ELSEWHERE_STATUS", subject=subject, consent=consent, purpose=PURPOSE
    )
    with pytest.raises(NotFound):
        elsewhere.verify(verifier, asked)
    good = VerifyRequest(template="ENT_STATUS", subject=subject, consent=consent, purpose=PURPOSE)
    batch = elsewhere.verify_batch(verifier, [asked, good])
    assert batch.results[0].error is not None and batch.results[0].error.code == "not_found"
    assert batch.results[1].outcome in ("yes", "no", "cannot_verify")
    assert len(events(client)) == 1
