"""Issues (数据异议处理): the feedback loop between those who use a dataset and its provider.

An issue is numbered per dataset and goes ``open`` → ``answered`` → ``resolved``; a resolved
issue cannot be answered or resolved again. Staff (:mod:`sandbox.onboarding.staff`), members of
tenants with a grant on the dataset, verifiers, and a subject about its own records may raise
one; staff see every issue, others their own tenant's; staff answer and resolve. The subject an
issue is about is kept only as its keyed reference and never shown back. A ``corrected``
resolution names the newer version that holds the correction and may revoke receipts
(:mod:`sandbox.onboarding.corrections`). The texts (title, description, answer, note) are stored
sealed, each bound to its issue (:mod:`sandbox.vault.text`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, false, func, select, update
from sqlalchemy.exc import IntegrityError

from sandbox.access.model import SUBJECT_ID, Actor, MemberRole, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now, utc
from sandbox.errors import Conflict, Forbidden, InvalidRequest, NoGrant, NotFound
from sandbox.onboarding.corrections import revocation_counts, revoke_older
from sandbox.onboarding.model import IssueState, ResolutionKind
from sandbox.onboarding.staff import dataset_row, is_staff, require_staff
from sandbox.store.schema import dataset_issues, grants, versions
from sandbox.vault.text import ISSUE_TEXTS, SealedText
from sandbox.verification.receipts import subject_ref

__all__ = ["Issue", "IssueAnswer", "IssueResolution", "Issues"]

log = logging.getLogger("veil.onboarding")


@dataclass(frozen=True)
class IssueAnswer:
    text: str
    answered_at: datetime


@dataclass(frozen=True)
class IssueResolution:
    kind: ResolutionKind
    version: int | None  # a correction's version
    note: str
    resolved_at: datetime
    revoked_receipts: int


@dataclass(frozen=True)
class Issue:
    """An issue as anyone who may see it sees it: whether it is about one subject's records,
    never which (``about_subject``); ``tenant`` is the raiser's (none for the local
    administrator)."""

    id: str
    number: int
    dataset: str
    state: IssueState
    title: str
    description: str
    about_subject: bool
    dataset_version: int | None  # current when it was raised
    tenant: str | None
    raised_at: datetime
    answer: IssueAnswer | None
    resolution: IssueResolution | None


class Issues:
    """The issues on the datasets of the state store behind ``engine``; changes recorded in
    ``audit``.

    ``zone_secret`` keys the subject references of issues like those of receipts (without it
    they are SHA-256, which does not match receipts, so no receipt can be revoked by a
    correction).
    """

    def __init__(
        self, engine: Engine, audit: AuditLog, *, zone_secret: bytes | None = None
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the issues service")
        self.zone_secret = zone_secret
        self.texts = SealedText(self.audit)

    def raise_issue(
        self,
        actor: Actor,
        dataset: str,
        title: str,
        description: str,
        subject: str | None = None,
    ) -> Issue:
        """A quality issue on a dataset, or on one subject's records (named by its credit code,
        kept only as a keyed hash). Staff, members of tenants with a grant on the dataset,
        verifiers, and a subject about its own records may raise one."""
        if not title.strip():
            raise InvalidRequest("an issue needs a title", field="title")
        member = actor.member
        if member is not None and member.role == MemberRole.SUBJECT:
            if subject is not None and subject != member.subject_id:
                raise Forbidden("a subject raises issues about its own records only")
            subject = member.subject_id
        ref = self._subject_ref(subject) if subject is not None else None
        for _attempt in range(5):
            try:
                with self.engine.begin() as con:
                    ds = dataset_row(con, dataset)
                    _may_raise(con, actor, dataset)
                    number = 1 + (
                        con.execute(
                            select(func.max(dataset_issues.c.number)).where(
                                dataset_issues.c.dataset_id == dataset
                            )
                        ).scalar()
                        or 0
                    )
                    issue_id = new_id("iss")
                    seal = self.texts.seal
                    con.execute(
                        dataset_issues.insert().values(
                            id=issue_id,
                            dataset_id=dataset,
                            number=number,
                            tenant_id=member.tenant_id if member is not None else None,
                            raised_by=member.id if member is not None else None,
                            title=seal(con, ISSUE_TEXTS, "title", (issue_id,), title),
                            description=seal(
                                con, ISSUE_TEXTS, "description", (issue_id,), description
                            ),
                            subject_ref=ref,
                            dataset_version=ds.current_version,
                            state=IssueState.OPEN.value,
                            created_at=now(),
                        )
                    )
                    self.audit.append(
                        con,
                        Event(
                            "onboarding",
                            "issue.raise",
                            refs={"dataset": dataset, "issue": issue_id, "number": number},
                            sealed={
                                "title": title,
                                "description": description,
                                "subject": subject,
                            },
                        ),
                        actor,
                    )
                break
            except IntegrityError:  # another issue took the number: try the next
                continue
        else:
            raise Conflict("could not number the issue; try again")
        log.info("issue raised dataset=%s number=%d", dataset, number)
        return self._issue(dataset, number)

    def list_issues(self, actor: Actor, dataset: str) -> list[Issue]:
        """The issues ``actor`` sees: staff every one, others their own tenant's."""
        with self.engine.connect() as con:
            dataset_row(con, dataset)
            rows = con.execute(
                select(dataset_issues)
                .where(_visible(con, actor, dataset))
                .order_by(dataset_issues.c.number)
            ).all()
            revoked = revocation_counts(con, [r.id for r in rows])
            return [self._opened(con, r, revoked.get(r.id, 0)) for r in rows]

    def get_issue(self, actor: Actor, dataset: str, number: int) -> Issue:
        with self.engine.connect() as con:
            dataset_row(con, dataset)
            row = con.execute(
                select(dataset_issues).where(
                    _visible(con, actor, dataset), dataset_issues.c.number == number
                )
            ).first()
        if row is None:
            raise NotFound(f"no issue {number} on {dataset!r}")
        return self._issue(dataset, number)

    def answer_issue(self, actor: Actor, dataset: str, number: int, answer: str) -> Issue:
        if not answer.strip():
            raise InvalidRequest("an answer needs text", field="answer")
        with self.engine.begin() as con:
            require_staff(con, actor, dataset)
            row = _issue_row(con, dataset, number)
            if row.state == IssueState.RESOLVED.value:
                raise Conflict(f"issue {number} is resolved")
            con.execute(
                update(dataset_issues)
                .where(dataset_issues.c.id == row.id)
                .values(
                    state=IssueState.ANSWERED.value,
                    answer=self.texts.seal(con, ISSUE_TEXTS, "answer", (row.id,), answer),
                    answered_by=actor.member.id if actor.member is not None else None,
                    answered_at=now(),
                )
            )
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "issue.answer",
                    refs={"dataset": dataset, "issue": row.id, "number": number},
                    sealed={"answer": answer},
                ),
                actor,
            )
        return self._issue(dataset, number)

    def resolve_issue(
        self,
        actor: Actor,
        dataset: str,
        number: int,
        kind: str,
        version: int | None = None,
        note: str = "",
        *,
        revoke_receipts: bool = True,
    ) -> Issue:
        """Close an issue. ``corrected`` names the ready version that carries the correction;
        for an issue about a subject it revokes (``revoke_receipts``) that subject's valid
        receipts answered from older versions of the dataset, with reason ``data_correction``."""
        try:
            resolution = ResolutionKind(kind)
        except ValueError:
            raise InvalidRequest("kind is no_change or corrected", field="kind") from None
        if resolution == ResolutionKind.CORRECTED and version is None:
            raise InvalidRequest("a correction names the version that holds it", field="version")
        if resolution == ResolutionKind.NO_CHANGE and version is not None:
            raise InvalidRequest("only a correction names a version", field="version")
        with self.engine.begin() as con:
            require_staff(con, actor, dataset)
            row = _issue_row(con, dataset, number)
            if row.state == IssueState.RESOLVED.value:
                raise Conflict(f"issue {number} is resolved")
            if version is not None:
                ready = con.execute(
                    select(versions.c.version).where(
                        versions.c.dataset_id == dataset, versions.c.version == version
                    )
                ).first()
                if ready is None:
                    raise InvalidRequest(
                        f"version {version} of {dataset} is not a ready version", field="version"
                    )
                if row.dataset_version is not None and version <= row.dataset_version:
                    raise InvalidRequest(
                        "a correction is a version newer than the one the issue was raised on",
                        field="version",
                    )
            at = now()
            con.execute(
                update(dataset_issues)
                .where(dataset_issues.c.id == row.id)
                .values(
                    state=IssueState.RESOLVED.value,
                    resolution=resolution.value,
                    resolution_version=version,
                    resolution_note=self.texts.seal(
                        con, ISSUE_TEXTS, "resolution_note", (row.id,), note
                    ),
                    resolved_by=actor.member.id if actor.member is not None else None,
                    resolved_at=at,
                )
            )
            revoked = 0
            if (
                resolution == ResolutionKind.CORRECTED
                and revoke_receipts
                and row.subject_ref is not None
                and version is not None
            ):
                revoked = revoke_older(con, row.id, row.subject_ref, dataset, version, at)
            self.audit.append(
                con,
                Event(
                    "onboarding",
                    "issue.resolve",
                    refs={
                        "dataset": dataset,
                        "issue": row.id,
                        "number": number,
                        "kind": resolution.value,
                        "version": version,
                        "revoked": revoked,
                    },
                    sealed={"note": note},
                ),
                actor,
            )
        log.info(
            "issue resolved dataset=%s number=%d kind=%s revoked=%d",
            dataset,
            number,
            resolution.value,
            revoked,
        )
        return self._issue(dataset, number)

    def _subject_ref(self, subject: str) -> str:
        if not SUBJECT_ID.match(subject):
            raise InvalidRequest(
                "a subject is 1 to 64 letters, digits, '_', '.' or '-'", field="subject"
            )
        if self.zone_secret is not None:
            return subject_ref(subject, self.zone_secret)
        return hashlib.sha256(b"veil.subject.v1\x00" + subject.encode("utf-8")).hexdigest()

    def _issue(self, dataset: str, number: int) -> Issue:
        with self.engine.connect() as con:
            row = _issue_row(con, dataset, number)
            revoked = revocation_counts(con, [row.id])
            return self._opened(con, row, revoked.get(row.id, 0))

    def _opened(self, con: Connection, row: Any, revoked: int) -> Issue:
        """The issue of a stored row, its texts opened."""

        def text(column: str) -> str | None:
            return self.texts.open(con, ISSUE_TEXTS, column, (row.id,), getattr(row, column))

        return _issue(
            row,
            revoked,
            title=text("title") or "",
            description=text("description") or "",
            answer=text("answer"),
            note=text("resolution_note"),
        )


def _may_raise(con: Connection, actor: Actor, dataset: str) -> None:
    if is_staff(con, actor, dataset):
        return
    member = actor.require_member(*MemberRole)  # any member (not the system actor)
    if member.role in (MemberRole.VERIFIER, MemberRole.SUBJECT):
        return
    has_grant = con.execute(
        select(grants.c.id).where(
            grants.c.tenant_id == member.tenant_id, grants.c.dataset_id == dataset
        )
    ).first()
    if has_grant is None:
        raise NoGrant(f"your tenant has no grant on {dataset!r}")


def _issue_row(con: Connection, dataset: str, number: int) -> Any:
    row = con.execute(
        select(dataset_issues).where(
            dataset_issues.c.dataset_id == dataset, dataset_issues.c.number == number
        )
    ).first()
    if row is None:
        raise NotFound(f"no issue {number} on {dataset!r}")
    return row


def _visible(con: Connection, actor: Actor, dataset: str) -> Any:
    """A filter on issues: all for staff, the acting member's tenant's otherwise (none for an
    actor that is neither)."""
    if is_staff(con, actor, dataset):
        return dataset_issues.c.dataset_id == dataset
    member = actor.member
    if member is None:
        return false()
    return and_(
        dataset_issues.c.dataset_id == dataset, dataset_issues.c.tenant_id == member.tenant_id
    )


def _issue(
    row: Any, revoked: int, *, title: str, description: str, answer: str | None, note: str | None
) -> Issue:
    """The issue of a stored row whose texts were opened (``title`` … ``note``)."""
    answered = None
    if answer is not None:
        answered = IssueAnswer(answer, utc(row.answered_at))
    resolution = None
    if row.resolution is not None:
        resolution = IssueResolution(
            ResolutionKind(row.resolution),
            row.resolution_version,
            note or "",
            utc(row.resolved_at),
            revoked,
        )
    return Issue(
        id=row.id,
        number=row.number,
        dataset=row.dataset_id,
        state=IssueState(row.state),
        title=title,
        description=description,
        about_subject=row.subject_ref is not None,  # the subject itself is never shown back
        dataset_version=row.dataset_version,
        tenant=row.tenant_id,
        raised_at=utc(row.created_at),
        answer=answered,
        resolution=resolution,
    )
