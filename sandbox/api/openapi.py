"""The OpenAPI document: FastAPI's, plus the error answers every operation can give.

Every error is an RFC 9457 problem (``application/problem+json``, :mod:`sandbox.api.problems`),
so each operation declares the problem statuses it may answer, the validation problem for
``422`` instead of FastAPI's default shape, and a ``default`` problem for anything else. Routes
that need an API key declare the bearer scheme; public ones (``/healthz``, ``/v1/keys``,
receipt status) do not, and are the only ones without ``401``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api import deps
from sandbox.api.idempotency import HEADER, MUTATING
from sandbox.api.problems import MEDIA_TYPE
from sandbox.idempotency import MAX_KEY_CHARS

REF = "#/components/schemas/{model}"
# Statuses any operation may answer (beyond its own successes and 401 for keyed routes).
COMMON = {
    400: "Invalid request, or a rule of the request's domain broken (see docs/errors.md).",
    403: "The caller's role may not do this, or a budget, grant or consent refuses it.",
    404: "Not found, or not yours: another tenant's object looks exactly like a missing one.",
    409: "Conflict with the current state (e.g. an Idempotency-Key reused).",
    413: "The request body is larger than the limit (payload_too_large).",
    422: "The request does not match its schema (`errors` names each field and rule), or a "
    "file it carries does not validate.",
    429: "Rate limit, tenant concurrency limit or a quota reached; see the Retry-After header.",
    500: "Internal error (never an engine message).",
    503: "The executor is not ready.",
}


IDEMPOTENCY_KEY = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Retry safely: the same key with the same request gets the first answer "
    "again, with no second effect (docs/ledger.md#idempotency-keys).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
}

RETRY_AFTER = {
    "description": "Whole seconds to wait (rate and concurrency limits; RFC 9110).",
    "schema": {"type": "integer", "minimum": 1},
}


class Problem(BaseModel):
    """An RFC 9457 problem document. Extension members depend on the error (docs/errors.md)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="The stable error code to branch on.")
    instance: str = Field(description="The request path.")


class FieldError(BaseModel):
    field: str
    rule: str
    message: str


class ValidationProblem(Problem):
    """A 422: a request that does not match its schema (with ``errors``), or a policy file that
    does not validate (with ``file``, ``key``, ``rule``)."""

    errors: list[FieldError] | None = None


def _problem(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(model=model)}}},
    }


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call is deps.member or _needs_key(d) for d in dependant.dependencies)


def _keyed_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route that authenticates its caller."""
    return {
        (method.lower(), str(context.path))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and _needs_key(context.original_route.dependant)
        for method in context.methods or ()
    }


def document(app: FastAPI) -> dict[str, Any]:
    """Build the OpenAPI document of ``app`` with the problem responses declared."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationProblem):
        found = model.model_json_schema(ref_template=REF)
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "A Veil API key."}
    }
    keyed = _keyed_operations(app)
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status, text in COMMON.items():
                name = "ValidationProblem" if status == 422 else "Problem"
                responses[str(status)] = _problem(name, text)
            responses["429"]["headers"] = {"Retry-After": RETRY_AFTER}
            if (method, path) in keyed:
                operation["security"] = [{"apiKey": []}]
                responses["401"] = _problem("Problem", "No API key, or an unknown or revoked one.")
                if method.upper() in MUTATING:
                    operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            responses["default"] = _problem("Problem", "Any other error.")
    return doc


def install(app: FastAPI) -> None:
    """Serve :func:`document` (built once) as the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
