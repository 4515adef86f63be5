"""The base of every response model, and the route class that serialises through it."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict


class View(BaseModel):
    """A response body. Undeclared keys of the service's answer are dropped; declared keys the
    answer lacks stay absent (routes serialise with ``exclude_unset``), so an optional member
    is either present or missing, never a made-up ``null``."""

    model_config = ConfigDict(extra="ignore")


class ViewRoute(APIRoute):
    """An API route that serialises its answer with ``response_model_exclude_unset``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        super().__init__(*args, **kwargs)
