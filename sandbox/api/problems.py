"""The one error renderer: every error becomes RFC 9457 ``application/problem+json``.

Whatever goes wrong — a :class:`VeilError` raised by a service, a request that does not match its
schema, a route or method that does not exist, or anything unexpected — is first turned into a
``VeilError`` and then rendered by :func:`problem`, the only place that builds a problem response.
Engine and library messages never reach the caller: anything that is not a ``VeilError`` is
logged by its class name and answered with a generic 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.api import redact
from sandbox.errors import (
    HttpError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestDoesNotValidate,
    Throttled,
    VeilError,
)

log = logging.getLogger("veil.http")
MEDIA_TYPE = "application/problem+json"


def problem(
    error: VeilError,
    instance: str,
    data_dir: Path | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The problem response of ``error``: its body (no data-directory path in it), ``instance``
    the request path, and a ``Retry-After`` header (whole seconds) when the request may simply
    be repeated later."""
    body = error.problem()
    if data_dir is not None:
        body = redact.tree(body, data_dir)
    body["instance"] = instance
    sent = dict(headers or {})
    if isinstance(error, Throttled):
        sent["Retry-After"] = str(error.retry_after)
    return JSONResponse(body, status_code=error.status, media_type=MEDIA_TYPE, headers=sent)


def code_of(body: bytes) -> str:
    """The ``code`` of a sent problem body, read back by the middlewares that record or count
    refusals (``http_error`` when the body is not a problem)."""
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return "http_error"
    return code if isinstance(code, str) and code else "http_error"


def from_http(exc: StarletteHTTPException) -> VeilError:
    """The error behind a routing answer of Starlette's (no such route, no such method)."""
    if exc.status_code == 404:
        return NotFound("not found")
    if exc.status_code == 405:
        return MethodNotAllowed("method not allowed")
    return HttpError(exc.status_code)


def from_validation(exc: RequestValidationError) -> VeilError:
    """A request that does not match its schema: every field and rule that failed."""
    errors = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
            "rule": e.get("type", ""),
            "message": e.get("msg", ""),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    return RequestDoesNotValidate(f"{first['field']}: {first['message']}", errors=errors)


def _data_dir(request: Request) -> Path | None:
    services = getattr(request.app.state, "services", None)
    return None if services is None else Path(services.settings.data_dir)


def install(app: FastAPI) -> None:
    @app.exception_handler(VeilError)
    async def veil_error(request: Request, exc: VeilError) -> JSONResponse:
        return problem(exc, request.url.path, _data_dir(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(from_validation(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(from_http(exc), request.url.path, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error %s on %s", type(exc).__name__, request.url.path)
        return problem(InternalError("internal error"), request.url.path)
