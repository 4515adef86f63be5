"""Outcomes: the template queries of the lines the decision allowed, and the refusal's decoy.

This module owns the one step that touches data. For each allowed line without an outcome it
looks the subject's facts up in the facts index when the index is built, else runs the
template's parameterised query in the locked-down executor on the leased workspace — the
single-subject query for one request, one batch query per template version for a batch (side by
side, as many at once as the executor has workers) — and maps the facts to the outcome with
:func:`policies.templates.decide.decide`. The facts never leave this module. A query that fails
after its line was allowed marks the line ``failed``: it stays charged, as an uncertain outcome —
unless it failed before any data was read (the workspace could not be leased, or no worker took
the query), which also marks it ``unread``: then the answer transaction charges nothing for it.

The refusal path's :meth:`Outcomes.decoy` does the same work for a subject that does not exist,
so that a consent refusal takes about as long as an answer.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from policies.templates.batch import template_batch_query
from policies.templates.claims import Claim
from policies.templates.decide import decide
from policies.templates.model import ClaimType
from policies.templates.sql import template_query
from sandbox.engine.executor import NOT_DISPATCHED, Executor
from sandbox.errors import ExecutionFailed, VeilError
from sandbox.keys.signing import SigningKeys
from sandbox.vault.decrypted import Vault, leased
from sandbox.verification.facts import ABSENT_SUBJECT, FactsIndex
from sandbox.verification.lines import Line

__all__ = ["DECOY_SUBJECT", "Outcomes"]

log = logging.getLogger("veil.verification")

DECOY_SUBJECT: Final = ABSENT_SUBJECT  # never a subject: the refusal path's decoy reads nothing


class Outcomes:
    """Outcomes from the facts index or the executor. ``vault`` decrypts sealed workspaces
    (None: version paths are plain files); ``facts`` answers from the facts index when built
    (None: always a query); ``keys`` signs the decoy's stand-in for a receipt."""

    def __init__(
        self,
        executor: Executor,
        keys: SigningKeys,
        *,
        vault: Vault | None = None,
        facts: FactsIndex | None = None,
    ) -> None:
        self.executor = executor
        self.keys = keys
        self.vault = vault
        self.facts = facts

    def run(self, lines: list[Line], *, single: bool) -> None:
        """Outcomes for the lines that need one: one engine query per template version (the
        single call uses the single-subject query)."""
        todo = [ln for ln in lines if ln.ok and ln.outcome is None]
        if not todo:
            return
        todo = [line for line in todo if not self._indexed(line)]
        if single and todo:
            (line,) = todo
            assert line.template is not None and line.version is not None
            assert line.request is not None
            sql, params = template_query(
                line.template, line.version.policy, line.request.subject, line.claim
            )
            opened = False
            try:
                with leased(self.vault, line.version) as workspace:
                    opened = True
                    (row,) = self.executor.run(workspace, sql, params)
            except VeilError as exc:
                line.failed = exc  # charged all the same: the outcome is uncertain …
                line.unread = not opened or isinstance(exc, NOT_DISPATCHED)  # … unless unread
                return
            line.outcome = decide(line.template, row, line.claim)
            return
        groups: dict[tuple[str, int, str], list[Line]] = defaultdict(list)
        for line in todo:
            assert line.template is not None and line.version is not None
            groups[(*line.template.key, line.version.dataset)].append(line)
        # The groups' queries run side by side, as many at once as the executor has workers.
        parallel = min(len(groups), len(self.executor.worker_pids()))
        if parallel < 2:
            for group in groups.values():
                self._execute_group(group)
            return
        with ThreadPoolExecutor(parallel, thread_name_prefix="veil-batch-query") as pool:
            for done in [pool.submit(self._execute_group, g) for g in groups.values()]:
                done.result()

    def _indexed(self, line: Line) -> bool:
        """Decide ``line`` from the facts index if its index is built (see
        :mod:`sandbox.verification.facts`)."""
        if self.facts is None:
            return False
        assert line.template is not None and line.version is not None
        assert line.request is not None
        found = self.facts.get(line.template, line.version, line.request.subject, line.claim)
        if found is None:
            return False
        line.outcome = decide(line.template, found, line.claim)
        return True

    def _execute_group(self, group: list[Line]) -> None:
        """The outcomes of a batch's lines on one template version: one engine query."""
        template, version = group[0].template, group[0].version
        assert template is not None and version is not None
        subjects = [ln.request.subject for ln in group if ln.request]
        ran = False
        try:
            sql, params = template_batch_query(
                template, version.policy, subjects, [ln.claim for ln in group]
            )
            with leased(self.vault, version) as workspace:
                try:
                    rows = self.executor.run(workspace, sql, params)
                except NOT_DISPATCHED:
                    raise
                except BaseException:
                    ran = True
                    raise
                ran = True
            if len(rows) != len(group):
                raise ExecutionFailed("the batch query returned the wrong number of rows")
        except VeilError as exc:
            log.warning("batch query failed template=%s code=%s", template.id, exc.error_code)
            for ln in group:
                ln.failed = exc  # charged all the same: the outcome is uncertain …
                ln.unread = not ran  # … unless no data was read
            return
        for ln, row in zip(group, rows, strict=True):
            ln.outcome = decide(template, row[1:], ln.claim)

    def decoy(self, line: Line) -> None:
        """The refusal path's stand-in for the answer path: the same template query for a
        subject that does not exist, and a signature, so a refusal takes about as long as an
        answer. Its result is thrown away."""
        template, version = line.template, line.version
        if template is None or version is None:
            return
        claim: Claim = None
        if template.claim.type == ClaimType.CHOICE:
            claim = template.claim.choices[0]
        elif template.claim.type == ClaimType.NUMBER:
            claim = template.claim.minimum
        if (
            self.facts is not None
            and self.facts.get(template, version, DECOY_SUBJECT, claim) is not None
        ):
            self.keys.ring().current.sign(b"veil.decoy")  # the answer path was a lookup too
            return
        try:
            sql, params = template_query(template, version.policy, DECOY_SUBJECT, claim)
            with leased(self.vault, version) as workspace:
                self.executor.run(workspace, sql, params)
        except VeilError:
            pass
        self.keys.ring().current.sign(b"veil.decoy")
