"""The one exception tree.

Every error Veil raises on purpose is a :class:`VeilError` with a stable snake_case ``code`` and an
HTTP ``status``. The tree is rooted here, in the pure ``policies`` package, so that the gate and the
policy loader can raise typed errors without importing the runtime; ``sandbox.errors`` extends it.
One handler in the HTTP layer renders any ``VeilError`` as RFC 9457 problem JSON.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class VeilError(Exception):
    """Base of every deliberate error. ``detail`` must never carry data values."""

    code: ClassVar[str] = "internal_error"
    status: int = 500  # a class's status; an instance may carry another (an HTTP error's own)
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body (without ``instance``), extension members included."""
        body: dict[str, Any] = {
            "type": f"https://veil.example/problems/{self.error_code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.error_code,
        }
        body.update(self.extra)
        return body

    @property
    def error_code(self) -> str:
        return self.code


class InvalidRequest(VeilError):
    code = "invalid_request"
    status = 400
    title = "Invalid request"


class NotFound(VeilError):
    code = "not_found"
    status = 404
    title = "Not found"


class PolicyError(VeilError):
    """A policy, zone or template file that does not validate: names the file, key and rule."""

    code = "invalid_policy"
    status = 422
    title = "Invalid policy"

    def __init__(self, file: str, key: str, rule: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {rule}: {message}", file=file, key=key, rule=rule)
        self.file = file
        self.key = key
        self.rule = rule


class QueryRejected(VeilError):
    """The gate refused a query before any data was touched.

    ``rule`` is the stable code of the allow-list rule that failed (e.g. ``unsupported_function``);
    ``subject`` names what broke it (a function, a column, a clause), never a query literal.
    """

    status = 400
    title = "Query rejected"

    def __init__(self, rule: str, subject: str = "", message: str = "") -> None:
        text = f"{rule}: {subject}" if subject else rule
        if message:
            text = f"{text} ({message})"
        super().__init__(text, rule=rule, subject=subject)
        self.rule = rule
        self.subject = subject

    @property
    def error_code(self) -> str:
        return self.rule


class Refusal(StrEnum):
    LEAKAGE_CAP = "leakage_cap"
    TENANT_QUOTA = "tenant_quota"
    CLAIM_CHANGE = "claim_change"


class VerificationRefused(VeilError):
    """Refused from request history alone; nothing was run or charged. Says which rule, never
    which tenant asked before or what was claimed."""

    status = 429
    title = "Verification refused"
    reason: ClassVar[Refusal]

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.default_detail, reason=self.reason.value)

    default_detail: ClassVar[str] = ""

    @property
    def error_code(self) -> str:
        return self.reason.value


class LeakageCapReached(VerificationRefused):
    reason = Refusal.LEAKAGE_CAP
    title = "Leakage cap reached for this subject"
    default_detail = (
        "this subject's attribute has been verified as often as the template allows in its "
        "window; try again after the window"
    )


class TenantQuotaExceeded(VerificationRefused):
    reason = Refusal.TENANT_QUOTA
    title = "Verification quota exceeded"
    default_detail = "the tenant's quota for this template is used up for the current window"


class ClaimChangeRefused(VerificationRefused):
    status = 409
    reason = Refusal.CLAIM_CHANGE
    title = "Claim differs from an earlier claim"
    default_detail = (
        "a different claim on this subject and attribute was verified in the current window"
    )


class InvalidClaim(InvalidRequest):
    """A claim that the template does not accept. Names the rule, never echoes the value."""

    code = "invalid_claim"
    title = "Invalid claim"


class InvalidBudget(InvalidRequest):
    code = "invalid_budget"
    title = "Invalid privacy parameter"


class SqlTooLong(QueryRejected):
    """SQL text longer than the limit (``VEIL_MAX_SQL_CHARS`` over HTTP): refused before parsing."""

    code = "sql_too_long"
    title = "SQL too long"

    def __init__(self, limit: int) -> None:
        super().__init__(self.code, "", f"at most {limit} characters")
        self.extra.update(field="sql", limit=limit)


class SqlTooDeep(QueryRejected):
    """SQL nested deeper than the limit: brackets (``VEIL_MAX_SQL_DEPTH`` over HTTP, before
    parsing) or expressions (a fixed cap, while parsing)."""

    code = "sql_too_deep"
    title = "SQL nested too deeply"

    def __init__(self, limit: int, what: str = "brackets") -> None:
        super().__init__(self.code, "", f"{what} nested at most {limit} deep")
        self.extra.update(field="sql", limit=limit)
