"""Service results and their wire models agree: every response model that mirrors a result
dataclass has exactly its fields, and every route declares a response model (or answers a
file format, declared as such)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass

import pytest
from fastapi.routing import APIRoute
from pydantic import ValidationError

import sandbox.api.responses
from sandbox.api.responses.base import View
from sandbox.config import Settings
from tests.support.app import build_app


def views() -> list[type[View]]:
    package = sandbox.api.responses
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(info.name)
    found: list[type[View]] = []
    todo = list(View.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


MIRRORS = [v for v in views() if v.mirrors is not None]


@pytest.mark.parametrize("view", MIRRORS, ids=lambda v: f"{v.__module__}.{v.__name__}")
def test_a_view_has_exactly_its_results_fields(view: type[View]) -> None:
    assert view.mirrors is not None and dataclasses.is_dataclass(view.mirrors)
    result_fields = {f.name for f in dataclasses.fields(view.mirrors)}
    assert set(view.model_fields) == result_fields, view.mirrors
    assert view.omit_none <= result_fields


def test_results_are_frozen() -> None:
    for view in MIRRORS:
        assert view.mirrors is not None
        params = view.mirrors.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, view.mirrors


def test_of_refuses_what_the_view_does_not_declare() -> None:
    @dataclass(frozen=True)
    class Result:
        a: int
        b: str | None

    class Wire(View):
        mirrors = Result
        omit_none = frozenset({"b"})
        a: int
        b: str | None = None

    assert Wire.of(Result(1, None)).model_dump(exclude_unset=True) == {"a": 1}
    assert Wire.of(Result(1, "x")).model_dump(exclude_unset=True) == {"a": 1, "b": "x"}

    @dataclass(frozen=True)
    class Misspelt:
        a: int
        bb: str

    with pytest.raises(ValidationError):
        Wire.of(Misspelt(1, "x"))
    with pytest.raises(TypeError):
        Wire.of({"a": 1})


def test_nested_results_leave_out_their_own_absent_fields() -> None:
    @dataclass(frozen=True)
    class Inner:
        a: int
        b: str | None

    @dataclass(frozen=True)
    class Outer:
        inner: Inner
        items: tuple[Inner, ...]
        maybe: Inner | None

    class InnerWire(View):
        mirrors = Inner
        omit_none = frozenset({"b"})
        a: int
        b: str | None = None

    class OuterWire(View):
        mirrors = Outer
        omit_none = frozenset({"maybe"})
        inner: InnerWire
        items: list[InnerWire]
        maybe: InnerWire | None = None

    wire = OuterWire.of(Outer(Inner(1, None), (Inner(2, "x"), Inner(3, None)), None))
    assert wire.model_dump(exclude_unset=True) == {
        "inner": {"a": 1},
        "items": [{"a": 2, "b": "x"}, {"a": 3}],
    }

    @dataclass(frozen=True)
    class Stray:
        a: int
        c: int

    with pytest.raises(ValidationError):
        OuterWire.of(Outer(Stray(1, 2), (), None))  # type: ignore[arg-type]


def test_every_json_route_declares_its_response_model() -> None:
    app = build_app(Settings())
    missing = [
        (sorted(route.methods), route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        and route.response_model is None
        and route.status_code != 204
        and not any(
            media != "application/json"
            for response in route.responses.values()
            for media in response.get("content", {})
        )
    ]
    assert missing == []
