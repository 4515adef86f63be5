"""The base of every response model, and the route class that serialises through it.

Services return frozen dataclasses; a response model turns one into its wire form with
:meth:`View.of`, the only place a result becomes a body. A model that is the wire form of a result
names it in ``mirrors`` and has exactly its fields (``tests/api/test_responses.py`` checks every
pair), and models refuse keys they do not declare, so a field cannot be misspelt, dropped or
added on one side only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator

from sandbox.api.bodies import BodyRoute


class View(BaseModel):
    """A response body.

    ``mirrors``: the result dataclass this model is the wire form of (``None`` for a model built
    otherwise, e.g. a list wrapper). ``omit_none``: fields left out of the body, rather than sent
    as ``null``, when the result holds ``None`` (routes serialise with ``exclude_unset``), so an
    optional member is either present or missing, never a made-up ``null``."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    mirrors: ClassVar[type | None] = None
    omit_none: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def of(cls, result: Any) -> Self:
        """The wire form of ``result``, a frozen dataclass with this model's fields (nested
        results become their fields' models, each leaving out its own ``omit_none`` fields)."""
        if not dataclasses.is_dataclass(result) or isinstance(result, type):
            raise TypeError(f"{cls.__name__}.of takes a result dataclass, not {type(result)}")
        return cls.model_validate(result)

    @classmethod
    def absent(cls, result: Any) -> set[str]:
        """The fields of ``result`` that its body leaves out: the ``omit_none`` ones that hold
        ``None`` (a view whose members exist only in some cases names them here)."""
        return {name for name in cls.omit_none if getattr(result, name, None) is None}

    @model_validator(mode="before")
    @classmethod
    def _result_fields(cls, data: Any) -> Any:
        """A result dataclass that this view mirrors (given to :meth:`of`, or nested in one) as
        the values of its fields, less the :meth:`absent` ones: so they stay unset. A view that
        mirrors no result reads what it declares from the object's attributes."""
        if (
            cls.mirrors is not None
            and dataclasses.is_dataclass(data)
            and not isinstance(data, type)
        ):
            left_out = cls.absent(data)
            return {
                f.name: getattr(data, f.name)
                for f in dataclasses.fields(data)
                if f.name not in left_out
            }
        return data


class ViewRoute(BodyRoute):
    """An API route that serialises its answer with ``response_model_exclude_unset`` (and reads
    a JSON body strictly, :class:`~sandbox.api.bodies.BodyRoute`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        super().__init__(*args, **kwargs)
