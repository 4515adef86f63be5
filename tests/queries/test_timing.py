"""An answered query is released on its time grid: never before the grid point its step, from
public facts (the configured grid, the plan's tables, their size class), puts it at."""

from __future__ import annotations

import time

from policies.gate.grid import TimeGrid, input_rows, step_s
from sandbox import catalog
from sandbox.config import Settings
from tests.support.app import auth, engine_of, running_app

ATTACK = "SELECT COUNT(*) FROM tax JOIN social_insurance USING (credit_code) WHERE revenue >= {x}"


def test_an_answer_is_not_released_before_its_grid_point(
    settings: Settings, keys: dict[str, str]
) -> None:
    with running_app(settings, query_grid_ms=400.0, query_grid_ns_per_row=10.0) as client:
        version = catalog.current(engine_of(client), "enterprise")
        rows = input_rows(version.policy, ["tax", "social_insurance"], version.row_counts)
        step = step_s(TimeGrid(400.0, 10.0), rows, statements=1)
        assert step >= 0.4
        for x in (1e4, 5e6):  # the least and the most selective threshold of the finding
            body = {"dataset": "enterprise", "sql": ATTACK.format(x=x), "epsilon": 0.01}
            started = time.monotonic()
            response = client.post("/v1/queries", json=body, headers=auth(keys["analyst"]))
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert elapsed >= step
            # a repeat is the cached release, which touches no data: not held
            again = client.post("/v1/queries", json=body, headers=auth(keys["analyst"]))
            assert again.status_code == 200 and again.json()["cached"] is True


def test_no_grid_when_it_is_turned_off(settings: Settings, keys: dict[str, str]) -> None:
    """``query_grid_ms = 0``: answers go out when ready (the query still runs unpruned)."""
    with running_app(settings, query_grid_ms=0.0) as client:
        body = {"dataset": "enterprise", "sql": ATTACK.format(x=1e5), "epsilon": 0.01}
        response = client.post("/v1/queries", json=body, headers=auth(keys["analyst"]))
        assert response.status_code == 200, response.text
