"""DP answers, previews and budgets: noisy values with intervals, costs, what is left; and the
answer's JSON as the ledger keeps it for the answer cache (the same wire form)."""

from __future__ import annotations

from pydantic import Field, TypeAdapter

from sandbox import queries as results
from sandbox.api.responses.base import View
from sandbox.api.responses.tenants import GrantFigures
from sandbox.ledger import budgets

Number = int | float


class MemberBudget(View):
    mirrors = budgets.MemberShare

    total: float
    spent: float
    remaining: float


class Budget(GrantFigures):
    mirrors = budgets.BudgetStatus
    omit_none = frozenset({"member_budget", "queries_left_at_this_cost"})

    dataset: str
    grant: str
    member_budget: MemberBudget | None = None
    queries_left_at: dict[str, int] = Field(
        description="How many more queries the budget buys at a few example costs."
    )
    summary: str
    queries_left_at_this_cost: int | None = None


class BudgetList(View):
    budgets: list[Budget]


class OutputColumn(View):
    mirrors = results.OutputColumn

    name: str
    kind: str


class Mechanism(View):
    mirrors = results.Mechanism
    omit_none = frozenset({"epsilon", "rho"})

    statistic: str
    mechanism: str
    scale: float
    epsilon: float | None = None
    rho: float | None = None


class Cost(View):
    mirrors = results.Cost
    omit_none = frozenset({"epsilon", "rho"})

    accounting: str
    epsilon: float | None = None
    rho: float | None = None
    delta: float
    mechanisms: list[Mechanism]


class Cell(View):
    """A released number and its 95% interval (``null`` where it was suppressed)."""

    mirrors = results.ReleasedCell

    value: Number | None
    ci95: list[Number | None] = Field(min_length=2, max_length=2)


class Answer(View):
    mirrors = results.Answer

    query_id: str
    dataset: str
    version: int
    columns: list[OutputColumn]
    rows: list[dict[str, Cell | str | int | float | bool | None]] = Field(
        description="One object per released group: group keys as plain values, every "
        "statistic as a cell."
    )
    suppressed_groups: int
    cost: Cost
    budget: Budget
    cached: bool


class Preview(View):
    mirrors = results.Preview

    dataset: str
    version: int
    columns: list[OutputColumn]
    cost: Cost
    expected_ci95_half_width: dict[str, float | dict[str, float] | None] = Field(
        description="Per output, the expected 95% half-width where it does not depend on the "
        "data (a mean: at a few group sizes); null where it does."
    )
    budget: Budget
    affordable: bool


class AnswerJson:
    """The answer cache's form of an answer (:class:`sandbox.queries.AnswerCodec`): its wire
    JSON, read back through the same view."""

    _result = TypeAdapter(results.Answer)

    def dump(self, answer: results.Answer) -> str:
        return Answer.of(answer).model_dump_json(exclude_unset=True)

    def load(self, text: str) -> results.Answer:
        return self._result.validate_python(Answer.model_validate_json(text).model_dump())


ANSWER_JSON = AnswerJson()
