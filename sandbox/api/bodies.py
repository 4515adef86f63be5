"""JSON request bodies: every route reads them through :mod:`sandbox.jsonbody`.

:class:`BodyRoute` (the base of every route class of the API) hands its handler a
:class:`JsonBodyRequest`, whose :meth:`~JsonBodyRequest.json` is the strict reader, and reads a
JSON body before the handler does: a body nested too deep or naming a member twice is refused
there (``invalid_request`` / ``duplicate_json_key``), before authentication, before an
``Idempotency-Key`` is claimed and before any route runs. The body is read through the guard's
counted ``receive``, so a body over the size limit is a ``413`` first. What is not JSON at all is
left to FastAPI, which answers it as before (``422``, ``json_invalid``). The batch route reads its
body itself, through the same reader (:func:`sandbox.verification.requests.parse_batch`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from sandbox import jsonbody

__all__ = ["BodyRoute", "JsonBodyRequest", "is_json"]


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this media type as JSON (``application/json`` or
    ``application/…+json``; a body without a type is not read as JSON)."""
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBodyRequest(Request):
    """A request whose JSON body is read by the strict reader (and once)."""

    _json: Any

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsonbody.loads(await self.body())
        return self._json


class BodyRoute(APIRoute):
    """A route whose JSON body is read strictly, and refused before the handler if it must be."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_json = self.body_field is not None

        async def strict(request: Request) -> Response:
            request = JsonBodyRequest(request.scope, request.receive)
            if reads_json and is_json(request.headers.get("content-type")):
                # Not JSON at all: FastAPI reads it again and answers 422 json_invalid.
                with contextlib.suppress(json.JSONDecodeError):
                    await request.json()
            return await handler(request)

        return strict
