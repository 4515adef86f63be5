"""The facts index (sandbox/facts.py): on the demo zone, every template's indexed facts are
exactly what its single-subject query returns, for subjects with records and without; an answer
comes from a built index without the executor; a dataset with more subjects than allowed is not
indexed and answers through the query."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from policies.templates.batch import subjects_sql
from policies.templates.loader import load_templates
from policies.templates.model import Template
from policies.templates.sql import template_query
from sandbox import catalog
from sandbox.catalog import DatasetVersion
from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.keys import directory as keystore
from sandbox.store import db
from sandbox.vault.decrypted import Vault, leased
from sandbox.verification.facts import ABSENT_SUBJECT, FactsIndex, index_claims
from tests.support.app import running_app
from tests.support.verification import ask, grant

TEMPLATES = Path(__file__).resolve().parents[2] / "sandbox" / "demo" / "data" / "templates"
SAMPLE = 40  # subjects per template and claim checked against the single query


@dataclass(frozen=True)
class Zone:
    executor: Executor
    vault: Vault
    version: DatasetVersion
    workspace: Path  # the decrypted copy

    def index(self, max_subjects: int) -> FactsIndex:
        return FactsIndex(self.executor, self.vault, max_subjects)


@pytest.fixture()
def zone(data_dir: Path) -> Iterator[Zone]:
    settings = Settings(data_dir=data_dir)
    engine = db.connect(settings.state_url)
    version = catalog.current(engine, "enterprise")
    engine.dispose()
    with (
        Executor(ExecutorLimits(workers=1, threads=1), data_dir / "tmp") as executor,
        Vault(
            keystore.master_keys(settings.keys_path, master_key=settings.master_key),
            settings.runtime_dir,
        ) as vault,
        leased(vault, version) as workspace,
    ):
        yield Zone(executor, vault, version, workspace)


def built(index: FactsIndex, templates: list[Template], version: DatasetVersion) -> None:
    index.warm(templates, lambda dataset: version)
    deadline = time.monotonic() + 120
    while index.state() == "building":
        assert time.monotonic() < deadline, "the index was not built in time"
        time.sleep(0.05)


def test_indexed_facts_are_the_single_query_facts(zone):
    executor, version = zone.executor, zone.version
    templates = list(load_templates(TEMPLATES))
    index = zone.index(1_000_000)
    try:
        built(index, templates, version)
        for template in templates:
            assert index.ready(template, version), template.id
            claims = index_claims(template, version)
            assert claims is not None
            sql = subjects_sql(version.policy)
            subjects = [r[0] for r in executor.run(zone.workspace, sql, ["", 100_000])]
            step = max(1, len(subjects) // SAMPLE)
            asked = [*subjects[::step], ABSENT_SUBJECT, "91110000NOSUCHONE1", subjects[-1]]
            for claim in claims:
                used = claim if claim is not None else _any_claim(template)
                for subject in asked:
                    single = template_query(template, version.policy, subject, used)
                    (row,) = executor.run(zone.workspace, *single)
                    found = index.get(template, version, subject, used)
                    assert found == tuple(row), (template.id, claim, subject)
    finally:
        index.close()


def _any_claim(template: Template) -> int | None:
    """A claim the template accepts, for templates whose facts do not depend on it."""
    if template.claim.choices:
        return template.claim.choices[0]
    return template.claim.minimum


def test_a_template_whose_query_reads_the_claim_is_indexed_per_allowed_claim(zone):
    """Every demo template is indexable: one index, or (ENT_AGE, the continuity templates) one
    per allowed choice. No template kind's SQL reads a numeric claim, so the other branch of
    ``index_claims`` (not indexable) cannot be reached with real templates."""
    version = zone.version
    for template in load_templates(TEMPLATES):
        claims = index_claims(template, version)
        assert claims is not None
        if claims != [None]:
            assert claims == list(template.claim.choices)


def test_too_many_subjects_means_no_index(zone):
    version = zone.version
    templates = list(load_templates(TEMPLATES))
    index = zone.index(10)
    try:
        built(index, templates, version)
        assert index.state() == "ready"  # nothing left to build
        for template in templates:
            assert not index.ready(template, version)
            assert index.get(template, version, ABSENT_SUBJECT, _any_claim(template)) is None
    finally:
        index.close()


def test_off_means_no_index(zone):
    version = zone.version
    index = zone.index(0)
    template = next(iter(load_templates(TEMPLATES)))
    assert index.state() == "off"
    assert index.get(template, version, ABSENT_SUBJECT, _any_claim(template)) is None
    index.close()


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while client.get("/healthz").json()["facts_index"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_answers_come_from_the_built_index(data_dir, keys):
    """With the index built, a verification answers even with every executor worker gone."""
    with running_app(Settings(data_dir=data_dir, worker_threads=1)) as client:
        _ready(client)
        assert client.get("/healthz").json() == {"status": "ok", "facts_index": "ready"}
        consent, _ = grant(client, keys, "ENT_STATUS")
        client.app.state.services.executor.close()  # type: ignore[attr-defined]
        answer = ask(client, keys["verifier"], "ENT_STATUS", consent, keys["subject_id"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "yes"


def test_healthz_says_off_when_indexing_is_off(data_dir):
    settings = Settings(data_dir=data_dir, worker_threads=1, verification_index_max_subjects=0)
    with running_app(settings) as client:
        assert client.get("/healthz").json() == {"status": "ok", "facts_index": "off"}


def test_a_newer_version_replaces_the_older_ones(zone):
    """Indexing version 2 drops version 1's indexes, and version 1 is not indexed again."""
    templates = [next(iter(load_templates(TEMPLATES)))]
    older = replace(zone.version, path=zone.workspace)  # the decrypted copy, read as is
    newer = replace(older, version=older.version + 1)
    index = FactsIndex(zone.executor, None, 1_000_000)
    try:
        built(index, templates, older)
        assert index.ready(templates[0], older)
        built(index, templates, newer)
        assert index.ready(templates[0], newer)
        assert not index.ready(templates[0], older)
        built(index, templates, older)  # asked for again, e.g. by a request pinned before
        assert not index.ready(templates[0], older)
        assert index.get(templates[0], older, ABSENT_SUBJECT, _any_claim(templates[0])) is None
    finally:
        index.close()
