"""Hostile privacy parameters: NaN, ±infinity, negative, zero, huge, subnormal, strings, booleans.

Bodies are sent as raw JSON text, so that ``NaN`` and ``Infinity`` arrive as the tokens a hostile
client would write (Python's JSON reader accepts them). Every case must be refused with a coded
problem that names the field — 400 ``invalid_budget`` for a number Veil will not spend, 422
``invalid_request`` for a value that is not a number at all — and must leave the ledger and every
budget as they were. The same holds for an administrator creating a grant or a sub-budget.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from policies.accounting import request_delta_to_pico
from policies.errors import InvalidBudget
from tests.support.app import auth
from tests.support.hostile import HostileService

COUNT = "SELECT count(*) FROM registry"
PRIVATE_KEYS = "SELECT month, count(*) FROM tax GROUP BY month"


def bad(name: str, value: str, code: str, status: int, field: str | None) -> Any:
    return pytest.param(value, code, status, field, id=name)


REFUSED = ("invalid_budget", 400)
NOT_A_NUMBER = ("invalid_request", 422)

EPSILON = [
    bad("nan", "NaN", *REFUSED, "epsilon"),
    bad("infinity", "Infinity", *REFUSED, "epsilon"),
    bad("minus_infinity", "-Infinity", *REFUSED, "epsilon"),
    bad("overflow_to_infinity", "1e400", *REFUSED, "epsilon"),
    bad("negative", "-1", *REFUSED, "epsilon"),
    bad("negative_zero", "-0.0", *REFUSED, "epsilon"),
    bad("zero", "0", *REFUSED, "epsilon"),
    bad("huge", "1e9", *REFUSED, "epsilon"),
    bad("largest_float", "1.7976931348623157e308", *REFUSED, "epsilon"),
    bad("just_above_max", "100.000001", *REFUSED, "epsilon"),
    bad("subnormal", "5e-324", *REFUSED, "epsilon"),
    bad("below_one_micro", "9.99e-7", *REFUSED, "epsilon"),
    bad("big_integer", "123456789012345678901234567890", *REFUSED, "epsilon"),
    bad("null", "null", *REFUSED, "epsilon"),
    bad("string", '"0.5"', *NOT_A_NUMBER, "epsilon"),
    bad("string_nan", '"NaN"', *NOT_A_NUMBER, "epsilon"),
    bad("true", "true", *NOT_A_NUMBER, "epsilon"),
    bad("false", "false", *NOT_A_NUMBER, "epsilon"),
    bad("list", "[0.5]", *NOT_A_NUMBER, "epsilon"),
    bad("object", '{"value": 0.5}', *NOT_A_NUMBER, "epsilon"),
]

DELTA = [
    bad("nan", "NaN", *REFUSED, "delta"),
    bad("infinity", "Infinity", *REFUSED, "delta"),
    bad("minus_infinity", "-Infinity", *REFUSED, "delta"),
    bad("negative", "-1e-9", *REFUSED, "delta"),
    bad("one", "1.0", *REFUSED, "delta"),
    bad("above_max", "0.0010001", *REFUSED, "delta"),
    bad("subnormal", "5e-324", *REFUSED, "delta"),
    bad("below_one_pico", "1e-13", *REFUSED, "delta"),
    bad("string", '"1e-7"', *NOT_A_NUMBER, "delta"),
    bad("true", "true", *NOT_A_NUMBER, "delta"),
]

RHO = [
    bad("nan", "NaN", *REFUSED, "rho"),
    bad("infinity", "Infinity", *REFUSED, "rho"),
    bad("negative", "-0.5", *REFUSED, "rho"),
    bad("zero", "0", *REFUSED, "rho"),
    bad("huge", "1e9", *REFUSED, "rho"),
    bad("subnormal", "5e-324", *REFUSED, "rho"),
    bad("string", '"x"', *NOT_A_NUMBER, "rho"),
    bad("true", "true", *NOT_A_NUMBER, "rho"),
]

GRANT = [
    pytest.param("epsilon", "NaN", *REFUSED, id="epsilon_nan"),
    pytest.param("epsilon", "Infinity", *REFUSED, id="epsilon_infinity"),
    pytest.param("epsilon", "-Infinity", *REFUSED, id="epsilon_minus_infinity"),
    pytest.param("epsilon", "-1", *REFUSED, id="epsilon_negative"),
    pytest.param("epsilon", "0", *REFUSED, id="epsilon_zero"),
    pytest.param("epsilon", "1e9", *REFUSED, id="epsilon_huge"),
    pytest.param("epsilon", "5e-324", *REFUSED, id="epsilon_subnormal"),
    pytest.param("epsilon", "null", *REFUSED, id="epsilon_missing"),
    pytest.param("epsilon", '"10"', *NOT_A_NUMBER, id="epsilon_string"),
    pytest.param("epsilon", "true", *NOT_A_NUMBER, id="epsilon_true"),
    pytest.param("delta", "NaN", *REFUSED, id="delta_nan"),
    pytest.param("delta", "-1e-9", *REFUSED, id="delta_negative"),
    pytest.param("delta", "1.0", *REFUSED, id="delta_one"),
    pytest.param("delta", '"x"', *NOT_A_NUMBER, id="delta_string"),
    pytest.param("delta", "true", *NOT_A_NUMBER, id="delta_true"),
    pytest.param(
        "delta",
        "5e-324",
        *REFUSED,
        id="delta_subnormal",
    ),
    pytest.param("per_query_cap", "NaN", *REFUSED, id="cap_nan"),
    pytest.param("per_query_cap", "-1", *REFUSED, id="cap_negative"),
    pytest.param("per_query_cap", "0", *REFUSED, id="cap_zero"),
    pytest.param("per_query_cap", "20", *REFUSED, id="cap_above_budget"),
    pytest.param("per_query_cap", "5e-324", *REFUSED, id="cap_subnormal"),
    pytest.param("per_query_cap", "true", *NOT_A_NUMBER, id="cap_true"),
    pytest.param(
        "rho",
        "1.0",
        *REFUSED,
        id="rho_on_a_pure_grant",
    ),
]

SUB_BUDGET = ["NaN", "Infinity", "-1", "0", "5e-324", "1e9", "true", '"1"']


def query_body(sql: str, **fields: str) -> bytes:
    """A query body whose privacy fields are raw JSON text (``NaN``, ``Infinity`` …)."""
    members = ['"dataset": "enterprise"', f'"sql": {json.dumps(sql)}']
    members += [f'"{name}": {value}' for name, value in fields.items()]
    return ("{" + ", ".join(members) + "}").encode()


def test_inventory() -> None:
    counts = {
        "epsilon": len(EPSILON),
        "delta": len(DELTA),
        "rho": len(RHO),
        "grant": len(GRANT),
        "sub_budget": len(SUB_BUDGET),
    }
    print("\nhostile privacy parameters, per field:", counts)
    assert sum(counts.values()) >= 40


@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/preview"])
@pytest.mark.parametrize(("value", "code", "status", "field"), EPSILON)
def test_hostile_epsilon(
    hostile_service: HostileService, path: str, value: str, code: str, status: int, field: str
) -> None:
    before = hostile_service.charges()
    response = hostile_service.post_raw(path, query_body(COUNT, epsilon=value))
    hostile_service.assert_refused(response, code, status, field=field)
    assert hostile_service.charges() == before


@pytest.mark.parametrize(
    ("value", "pico"),
    [(0, 0), (0.0, 0), (1e-12, 1), (1.5e-12, 1), (1e-7, 100_000), (1e-3, 10**9)],
)
def test_a_requested_delta_is_a_cap_rounded_down(value: float, pico: int) -> None:
    assert request_delta_to_pico(value) == pico


@pytest.mark.parametrize(
    "value", [5e-324, 1e-13, 9.99e-13, math.nan, math.inf, -1e-12, 1.1e-3, True, "1e-7"]
)
def test_a_requested_delta_below_one_pico_or_invalid_is_refused(value: object) -> None:
    with pytest.raises(InvalidBudget) as info:
        request_delta_to_pico(value)  # type: ignore[arg-type]
    assert info.value.extra == {"field": "delta"}


@pytest.mark.parametrize(("value", "code", "status", "field"), DELTA)
def test_hostile_delta(
    hostile_service: HostileService, value: str, code: str, status: int, field: str
) -> None:
    before = hostile_service.charges()
    response = hostile_service.post_raw(
        "/v1/queries", query_body(PRIVATE_KEYS, epsilon="0.5", delta=value)
    )
    hostile_service.assert_refused(response, code, status, field=field)
    assert hostile_service.charges() == before


def test_zero_delta_cannot_select_private_keys(hostile_service: HostileService) -> None:
    before = hostile_service.charges()
    response = hostile_service.post_raw(
        "/v1/queries", query_body(PRIVATE_KEYS, epsilon="0.5", delta="0")
    )
    problem = hostile_service.assert_refused(response, "invalid_budget")
    assert "delta above zero" in problem["detail"]
    assert hostile_service.charges() == before


@pytest.mark.parametrize(("value", "code", "status", "field"), RHO)
def test_rho_on_a_pure_grant_names_rho(
    hostile_service: HostileService, value: str, code: str, status: int, field: str
) -> None:
    before = hostile_service.charges()
    response = hostile_service.post_raw("/v1/queries", query_body(COUNT, rho=value))
    hostile_service.assert_refused(response, code, status, field=field)
    assert hostile_service.charges() == before


@pytest.fixture(scope="module")
def zcdp_analyst(hostile_service: HostileService) -> tuple[str, str]:
    return hostile_service.new_analyst(accounting="zcdp", budget=10.0, per_query_cap=10.0)


@pytest.mark.parametrize(("value", "code", "status", "field"), RHO)
def test_hostile_rho_on_a_zcdp_grant(
    hostile_service: HostileService,
    zcdp_analyst: tuple[str, str],
    value: str,
    code: str,
    status: int,
    field: str,
) -> None:
    key, tenant = zcdp_analyst
    before = (hostile_service.tenant_charges(tenant), hostile_service.budgets(key))
    response = hostile_service.post_raw("/v1/queries", query_body(COUNT, rho=value), key=key)
    hostile_service.assert_refused(response, code, status, field=field)
    assert (hostile_service.tenant_charges(tenant), hostile_service.budgets(key)) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"epsilon": "0.5", "rho": "0.1"}, "rho", id="both"),
        pytest.param({"epsilon": "NaN"}, "epsilon", id="epsilon_nan"),
        pytest.param({"epsilon": "-Infinity"}, "epsilon", id="epsilon_minus_infinity"),
        pytest.param({}, "rho", id="neither"),
    ],
)
def test_zcdp_grant_refuses_epsilon_abuse(
    hostile_service: HostileService,
    zcdp_analyst: tuple[str, str],
    fields: dict[str, str],
    field: str,
) -> None:
    key, tenant = zcdp_analyst
    before = hostile_service.tenant_charges(tenant)
    response = hostile_service.post_raw("/v1/queries", query_body(COUNT, **fields), key=key)
    hostile_service.assert_refused(response, "invalid_budget", field=field)
    assert hostile_service.tenant_charges(tenant) == before


@pytest.mark.parametrize("path", ["/v1/queries", "/v1/queries/preview"])
def test_tiny_epsilon_over_a_quantile_is_a_coded_refusal(
    hostile_service: HostileService, path: str
) -> None:
    before = hostile_service.charges()
    response = hostile_service.post_raw(
        path, query_body("SELECT median(revenue) AS m FROM tax", epsilon="3e-6")
    )
    assert hostile_service.charges() == before
    hostile_service.assert_refused(response, "invalid_budget")


# --- grants and sub-budgets, by an administrator -----------------------------------------------


@pytest.fixture()
def grant_tenant(hostile_service: HostileService) -> str:
    """A tenant of its own per case: a grant wrongly created must not block the next case."""
    response = hostile_service.client.post(
        "/v1/tenants",
        json={"name": "hostile-grants", "kind": "research", "purpose_class": "public_welfare"},
        headers=auth(hostile_service.keys["admin"]),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def grant_body(**fields: str) -> bytes:
    members = {
        "dataset": '"enterprise"',
        "accounting": '"pure"',
        "epsilon": "10.0",
        "delta": "1e-6",
        "per_query_cap": "1.0",
    }
    members.update(fields)
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in members.items()) + "}").encode()


def grants_of(service: HostileService, tenant: str) -> list[dict[str, Any]]:
    response = service.client.get(
        f"/v1/tenants/{tenant}/grants", headers=auth(service.keys["admin"])
    )
    assert response.status_code == 200, response.text
    grants: list[dict[str, Any]] = response.json()["grants"]
    return grants


@pytest.mark.parametrize(("name", "value", "code", "status"), GRANT)
def test_hostile_grant_is_refused_and_creates_nothing(
    hostile_service: HostileService,
    grant_tenant: str,
    name: str,
    value: str,
    code: str,
    status: int,
) -> None:
    entries = len(hostile_service.ledger_entries())
    response = hostile_service.post_raw(
        f"/v1/tenants/{grant_tenant}/grants",
        grant_body(**{name: value}),
        key=hostile_service.keys["admin"],
    )
    hostile_service.assert_refused(response, code, status, field=name)
    assert grants_of(hostile_service, grant_tenant) == []
    assert len(hostile_service.ledger_entries()) == entries


def test_zcdp_grant_without_rho_names_rho(
    hostile_service: HostileService, grant_tenant: str
) -> None:
    response = hostile_service.post_raw(
        f"/v1/tenants/{grant_tenant}/grants",
        grant_body(accounting='"zcdp"'),
        key=hostile_service.keys["admin"],
    )
    hostile_service.assert_refused(response, "invalid_budget", field="rho")
    assert grants_of(hostile_service, grant_tenant) == []


@pytest.mark.parametrize("value", SUB_BUDGET)
def test_hostile_sub_budget_is_refused(hostile_service: HostileService, value: str) -> None:
    key, tenant = hostile_service.new_analyst(budget=10.0, per_query_cap=1.0)
    admin = auth(hostile_service.keys["admin"])
    (grant,) = grants_of(hostile_service, tenant)
    members = hostile_service.client.get(f"/v1/tenants/{tenant}/members", headers=admin).json()
    (member,) = members["members"]
    response = hostile_service.client.put(
        f"/v1/tenants/{tenant}/grants/{grant['id']}/members/{member['id']}",
        content=('{"budget": ' + value + "}").encode(),
        headers={**admin, "Content-Type": "application/json"},
    )
    status = 422 if value in ("true", '"1"') else 400
    code = "invalid_request" if status == 422 else "invalid_budget"
    hostile_service.assert_refused(response, code, status, field="budget")
    assert hostile_service.budgets(key)[0]["spent"] == 0.0
