"""Runtime errors, extending the tree rooted in :mod:`policies.errors`.

Import every error from here in runtime code; the pure ones are re-exported so that there is one
place to look up a code.
"""

from __future__ import annotations

from policies.errors import (
    InvalidRequest,
    NotFound,
    PolicyError,
    QueryRejected,
    VeilError,
)

__all__ = [
    "BudgetExhausted",
    "Conflict",
    "ExecutionFailed",
    "ExecutionTimeout",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "LockdownError",
    "NoGrant",
    "NotFound",
    "PolicyError",
    "QueryRejected",
    "ServiceUnavailable",
    "Unauthorized",
    "VeilError",
]


class Unauthorized(VeilError):
    code = "unauthorized"
    status = 401
    title = "Missing or unknown API key"


class Forbidden(VeilError):
    code = "forbidden"
    status = 403
    title = "Role not allowed"


class NoGrant(Forbidden):
    code = "no_grant"
    title = "No grant on this dataset"


class Conflict(VeilError):
    code = "conflict"
    status = 409
    title = "Conflict"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused for another request"


class BudgetExhausted(VeilError):
    """The query's cost exceeds what the grant has left. Nothing was charged for it."""

    code = "budget_exhausted"
    status = 403
    title = "Privacy budget exhausted"


class ExecutionTimeout(VeilError):
    """The worker ran past its deadline and was killed. The charge stays (outcome uncertain)."""

    code = "query_timeout"
    status = 504
    title = "Query timed out"


class ExecutionFailed(VeilError):
    """The engine failed. Its message is logged by code only and never returned."""

    code = "execution_failed"
    status = 500
    title = "Query execution failed"


class LockdownError(VeilError):
    """An engine instance failed its lockdown self-test; Veil refuses to serve through it."""

    code = "lockdown_failed"
    status = 503
    title = "Executor lockdown failed"


class ServiceUnavailable(VeilError):
    code = "service_unavailable"
    status = 503
    title = "Service unavailable"
