"""The one exception tree.

Every error Veil raises on purpose is a :class:`VeilError` with a stable snake_case ``code`` and an
HTTP ``status``. The tree is rooted here, in the pure ``policies`` package, so that the gate and the
policy loader can raise typed errors without importing the runtime; ``sandbox.errors`` extends it.
One handler in the HTTP layer renders any ``VeilError`` as RFC 9457 problem JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VeilError(Exception):
    """Base of every deliberate error. ``detail`` must never carry data values."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
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
