"""Runtime errors, extending the tree rooted in :mod:`policies.errors`.

Import every error from here in runtime code; the pure ones are re-exported so that there is one
place to look up a code.
"""

from __future__ import annotations

from policies.errors import (
    ClaimChangeRefused,
    InvalidClaim,
    InvalidRequest,
    LeakageCapReached,
    NotFound,
    PolicyError,
    QueryRejected,
    SqlTooDeep,
    SqlTooLong,
    TenantQuotaExceeded,
    VeilError,
    VerificationRefused,
)

__all__ = [
    "AuditChainBroken",
    "AuditNotCheckpointed",
    "BadSignature",
    "BudgetExhausted",
    "ClaimChangeRefused",
    "Conflict",
    "ConsentRefused",
    "DuplicateJsonKey",
    "ExecutionFailed",
    "ExecutionTimeout",
    "Forbidden",
    "HttpError",
    "IdempotencyKeyReused",
    "InsufficientStorage",
    "InternalError",
    "InvalidClaim",
    "InvalidRequest",
    "KeyFileExposed",
    "LeakageCapReached",
    "LoadInterrupted",
    "LockdownError",
    "MalformedReceipt",
    "MasterKeyError",
    "MethodNotAllowed",
    "NoGrant",
    "NotCanonicalizable",
    "NotFound",
    "PayloadTooLarge",
    "PolicyError",
    "QueryRejected",
    "RateLimited",
    "ReceiptError",
    "RequestDoesNotValidate",
    "ServiceUnavailable",
    "SqlTooDeep",
    "SqlTooLong",
    "TenantQuotaExceeded",
    "Throttled",
    "TooManyConcurrent",
    "Unauthorized",
    "UnknownKey",
    "UploadChecksumMismatch",
    "UploadOffsetMismatch",
    "UploadTooLarge",
    "VeilError",
    "VerificationRefused",
    "WorkspaceIntegrityError",
    "WorkspaceMissing",
    "WorkspaceNotSealed",
    "ZoneNotAuthorised",
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


class AuditNotCheckpointed(Conflict):
    """An inclusion proof was asked for an entry that no checkpoint covers yet (or before the
    first checkpoint): ask again after the next one (docs/audit.md)."""

    code = "audit_not_checkpointed"
    title = "Audit entry not yet checkpointed"


class AuditChainBroken(ServiceUnavailable):
    """The audit log failed the check that precedes every checkpoint (an entry since the last
    checkpoint edited, rebuilt or missing; checkpoints deleted): nothing is signed over it
    (docs/audit.md)."""

    code = "audit_chain_broken"
    title = "Audit chain broken"


class WorkspaceIntegrityError(VeilError):
    """A stored (sealed) workspace does not open: altered, cut short, not a sealed file, or
    sealed for another dataset version. Nothing of it is served (docs/security.md)."""

    code = "workspace_integrity"
    status = 500
    title = "Stored workspace failed its integrity check"


class WorkspaceNotSealed(WorkspaceIntegrityError):
    """A stored workspace is a plain DuckDB file from before encryption at rest: refused until
    ``veil workspaces seal`` encrypts it."""

    code = "workspace_not_sealed"
    title = "Stored workspace is not encrypted"


class WorkspaceMissing(WorkspaceIntegrityError):
    """The stored workspace of a registered version is not where the catalogue says: a fault
    of the server's files, found before any data was read."""

    code = "workspace_missing"
    title = "Stored workspace is missing"


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


class PayloadTooLarge(VeilError):
    """A request body over ``VEIL_MAX_BODY_BYTES`` (or a route's own cap): refused before it is
    read whole."""

    code = "payload_too_large"
    status = 413
    title = "Request body too large"


class Throttled(VeilError):
    """Refused for load, not for what was asked: the same request may succeed after
    ``retry_after`` seconds (sent as the ``Retry-After`` header too)."""

    status = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class RateLimited(Throttled):
    code = "rate_limited"
    title = "Too many requests"


class TooManyConcurrent(Throttled):
    code = "too_many_concurrent"
    title = "Too many concurrent requests"


class TooManyConnections(Throttled):
    """A connection over ``VEIL_CONNECTIONS_PER_ADDRESS`` from one client address: answered at
    once by the connection handling (:mod:`sandbox.api.connections`), nothing of it read."""

    code = "too_many_connections"
    title = "Too many connections from this address"


class RequestTimeout(VeilError):
    """A request whose headers or body did not arrive within ``VEIL_HEADER_TIMEOUT_S`` or
    ``VEIL_BODY_TIMEOUT_S``: answered by the connection handling, and the connection closed."""

    code = "request_timeout"
    status = 408
    title = "Request not received in time"


class MasterKeyError(VeilError):
    """The master key ring is missing, malformed, or cannot open a wrapped key."""

    code = "master_key_error"
    status = 500
    title = "Master key error"


class KeyFileExposed(MasterKeyError):
    """A key file or key directory is readable or writable by group or others, or not ours."""

    code = "key_file_exposed"
    title = "Key file permissions too open"


class ReceiptError(VeilError):
    """A receipt that does not verify. ``code`` says why; the detail never echoes a field."""

    status = 422
    title = "Receipt does not verify"


class MalformedReceipt(ReceiptError):
    code = "receipt_malformed"
    status = 400
    title = "Malformed receipt"


class UnknownKey(ReceiptError):
    code = "receipt_unknown_key"
    title = "Receipt signed with an unknown key"


class BadSignature(ReceiptError):
    code = "receipt_bad_signature"
    title = "Receipt signature does not verify"


class NotCanonicalizable(InvalidRequest):
    """A value outside the canonical-JSON subset (a float, a large integer, a lone surrogate…)."""

    code = "not_canonical_json"
    title = "Value has no canonical JSON form"


class DuplicateJsonKey(InvalidRequest):
    """A JSON body names a member twice in one object, at any depth: readers disagree on which
    one counts, so the body is refused (``field`` where, ``key`` the name; see
    :mod:`sandbox.jsonbody`)."""

    code = "duplicate_json_key"
    title = "Member named twice in a JSON object"


class RequestDoesNotValidate(InvalidRequest):
    """A request that does not match its schema: ``errors`` names each field, rule and message."""

    status = 422


class MethodNotAllowed(VeilError):
    """A route that exists, called with a method it does not take (the ``Allow`` header lists
    the ones it takes)."""

    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class HttpError(VeilError):
    """Any other refusal of the HTTP layer itself, with its status."""

    code = "http_error"
    title = "HTTP error"

    def __init__(self, status: int) -> None:
        super().__init__("http error")
        self.status = status


class InternalError(VeilError):
    """Anything unexpected: logged by its class name only, answered without its message."""


class LoadInterrupted(VeilError):
    """Recorded on a load that stopped reporting progress (its server stopped?): never raised,
    the version shows it."""

    code = "load_interrupted"
    title = "Load interrupted"


class UploadTooLarge(PayloadTooLarge):
    """An upload past ``VEIL_UPLOAD_MAX_BYTES`` or past the length it declared: nothing of the
    refused bytes is kept."""

    code = "upload_too_large"
    title = "Upload too large"


class UploadOffsetMismatch(Conflict):
    """A chunk sent at another offset than the bytes the upload has received (``offset``)."""

    code = "upload_offset_mismatch"
    title = "Upload offset mismatch"


class UploadChecksumMismatch(VeilError):
    """The SHA-256 of a whole upload differs from the one it declared: the upload is deleted."""

    code = "upload_checksum_mismatch"
    status = 422
    title = "Upload checksum mismatch"


class InsufficientStorage(VeilError):
    """Not enough free disk space for an upload's bytes: nothing of them is kept."""

    code = "insufficient_storage"
    status = 507
    title = "Insufficient storage"


class ZoneNotAuthorised(VeilError):
    """The zone's operator is not authorised now (suspended, exited, outside its term, or the
    dataset or product outside its scope): every product of the zone refuses. Nothing charged."""

    code = "zone_not_authorised"
    status = 403
    title = "Zone not authorised"
