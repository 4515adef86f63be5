"""The one error handler: every error becomes RFC 9457 ``application/problem+json``.

Engine and library messages never reach the caller: anything that is not a ``VeilError`` is logged
by its class name and answered with a generic 500.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.api import redact
from sandbox.errors import Throttled, VeilError

log = logging.getLogger("veil.http")
MEDIA_TYPE = "application/problem+json"


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=headers)


def veil_problem(exc: VeilError, instance: str, data_dir: Path | None = None) -> JSONResponse:
    """The problem response of a ``VeilError``: no data-directory path in it, and a
    ``Retry-After`` header (whole seconds) when the request may simply be repeated later."""
    body = exc.problem()
    if data_dir is not None:
        body = redact.tree(body, data_dir)
    body["instance"] = instance
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Throttled) else None
    return problem_response(body, headers)


def _data_dir(request: Request) -> Path | None:
    services = getattr(request.app.state, "services", None)
    return None if services is None else Path(services.settings.data_dir)


def install(app: FastAPI) -> None:
    @app.exception_handler(VeilError)
    async def veil_error(request: Request, exc: VeilError) -> JSONResponse:
        return veil_problem(exc, request.url.path, _data_dir(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "rule": e.get("type", ""),
                "message": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem_response(
            {
                "type": "https://veil.example/problems/invalid_request",
                "title": "Invalid request",
                "status": 422,
                "detail": f"{first['field']}: {first['message']}",
                "code": "invalid_request",
                "errors": errors,
                "instance": request.url.path,
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(
            {
                "type": f"https://veil.example/problems/{code}",
                "title": code.replace("_", " ").capitalize(),
                "status": exc.status_code,
                "detail": code.replace("_", " "),
                "code": code,
                "instance": request.url.path,
            }
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error %s on %s", type(exc).__name__, request.url.path)
        return problem_response(
            {
                "type": "https://veil.example/problems/internal_error",
                "title": "Internal error",
                "status": 500,
                "detail": "internal error",
                "code": "internal_error",
                "instance": request.url.path,
            }
        )
