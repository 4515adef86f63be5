"""The batch template query gives, line by line, exactly the facts of the single query."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from policies.errors import InvalidClaim, InvalidRequest
from policies.loader import load_policy
from policies.model import Policy
from policies.templates.batch import bind_batch, template_batch_query, template_batch_sql
from policies.templates.loader import TemplateSet, load_templates
from policies.templates.model import ClaimType, Kind, Template
from policies.templates.sql import Slot, template_query
from sandbox.demo.synthetic import generate
from tests.support.demo import DEMO_POLICY, DEMO_TEMPLATES
from tests.support.templates import ENTERPRISES, UNKNOWN, database


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return load_templates(DEMO_TEMPLATES)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEMO_POLICY)


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return generate(ENTERPRISES)


@pytest.fixture(scope="module")
def con(tables: dict[str, pa.Table]) -> Iterator[Any]:
    connection = database(tables)
    yield connection
    connection.close()


def _claims(template: Template, n: int) -> list[int | None]:
    if template.claim.type == ClaimType.CHOICE:
        return list(itertools.islice(itertools.cycle(template.claim.choices), n))
    if template.claim.type == ClaimType.NUMBER:
        return [1_000_000 + 250_000 * (i % 9) for i in range(n)]
    return [None] * n


def test_batch_facts_equal_single_facts(
    templates: TemplateSet, policy: Policy, tables: dict[str, pa.Table], con: Any
) -> None:
    codes = tables["registry"].column("credit_code").to_pylist()[:120]
    # unknown subjects, repeats, and a subject twice with different claims
    subjects = [*codes, UNKNOWN, codes[0], codes[5], "Z" * 18, codes[0]]
    for template in templates:
        claims = _claims(template, len(subjects))
        sql, params = template_batch_query(template, policy, subjects, claims)
        rows = con.execute(sql, params).fetchall()
        assert [r[0] for r in rows] == list(range(len(subjects))), template.id
        for (subject, claim), row in zip(zip(subjects, claims, strict=True), rows, strict=True):
            single_sql, single_params = template_query(template, policy, subject, claim)
            (expected,) = con.execute(single_sql, single_params).fetchall()
            assert tuple(row[1:]) == tuple(expected), (template.id, subject, claim)


def test_batch_sql_is_parameterised(templates: TemplateSet, policy: Policy) -> None:
    for template in templates:
        sql, params = template_batch_sql(template, policy)
        assert sql.count("?") == len(params)
        assert Slot.SUBJECTS in params and Slot.LINES in params
        in_sql = template.kind in (Kind.AGE, Kind.TAX_CONTINUITY, Kind.SI_CONTINUITY)
        assert (Slot.CLAIMS in params) == in_sql
        assert ";" not in sql and "in_business" not in sql
        bound = bind_batch(params, ["X" * 18], _claims(template, 1))
        assert "X" * 18 not in sql and ["X" * 18] in bound


def test_batch_claims_are_checked(templates: TemplateSet, policy: Policy) -> None:
    age = templates.get("ENT_AGE")
    with pytest.raises(InvalidClaim):
        template_batch_query(age, policy, ["A" * 18], [4])
    with pytest.raises(InvalidRequest):
        template_batch_query(age, policy, [], [])
