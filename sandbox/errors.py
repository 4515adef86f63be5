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
from policies.leakage import (
    ClaimChangeRefused,
    LeakageCapReached,
    TenantQuotaExceeded,
    VerificationRefused,
)
from policies.templates import InvalidClaim
from sandbox.receipts import (
    BadSignature,
    MalformedReceipt,
    NotCanonicalizable,
    ReceiptError,
    UnknownKey,
)

__all__ = [
    "BadSignature",
    "BudgetExhausted",
    "ClaimChangeRefused",
    "Conflict",
    "ConsentRefused",
    "ExecutionFailed",
    "ExecutionTimeout",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidClaim",
    "InvalidRequest",
    "LeakageCapReached",
    "LockdownError",
    "MalformedReceipt",
    "NoGrant",
    "NotCanonicalizable",
    "NotFound",
    "PolicyError",
    "QueryRejected",
    "ReceiptError",
    "ServiceUnavailable",
    "TenantQuotaExceeded",
    "Unauthorized",
    "UnknownKey",
    "VeilError",
    "VerificationRefused",
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


class ConsentRefused(VeilError):
    """No valid consent covers a verification request. One code, one status and one detail for
    every cause — no consent, another tenant's, another template's, expired, revoked, used up, a
    claim that does not match the commitment, an unknown subject — so a refusal says nothing
    about which (docs/verification.md)."""

    code = "consent_refused"
    status = 403
    title = "Verification refused"
    DETAIL = "no valid consent of the subject covers this request"

    def __init__(self) -> None:
        super().__init__(self.DETAIL)
