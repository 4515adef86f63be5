"""The client's errors: every refusal of a Veil server is an :class:`ApiError` carrying the
problem document's ``code`` and ``status`` (``problem()`` gives the whole document); its subclass
says the kind of refusal, so a caller can catch what it can handle (``except BudgetExceeded``)
and let the rest go. A server that cannot be reached, after every retry, is a
:class:`ConnectionFailed`."""

from __future__ import annotations

from typing import Any

from sandbox.errors import VeilError

__all__ = [
    "ApiError",
    "BadRequest",
    "BudgetExceeded",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "RemoteError",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "error_of",
]

# Problem codes that mean "the budget does not allow this", whatever their status.
BUDGET_CODES = frozenset({"budget_exhausted"})


class ApiError(VeilError):
    """A problem document (RFC 9457) returned by a Veil server.

    ``code`` is the stable problem code (docs/errors.md), ``status`` the HTTP status, ``detail``
    the explanation, and :meth:`problem` the whole document as the server sent it (with fields
    such as ``errors``, naming the input at fault).
    """

    def __init__(self, problem: dict[str, Any]) -> None:
        extra = {k: v for k, v in problem.items() if k not in ("detail", "status", "code", "title")}
        super().__init__(str(problem.get("detail", "")), **extra)
        self._problem = dict(problem)
        # The server's code for this instance, where VeilError's subclasses each fix one.
        self.code = str(problem.get("code", "remote_error"))  # type: ignore[misc]
        self.status = int(problem.get("status", 500))

    def problem(self) -> dict[str, Any]:
        return dict(self._problem)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


RemoteError = ApiError  # the name the command line knew it by


class BadRequest(ApiError):
    """400 or 422: the request is wrong as sent (``problem['errors']`` names the field)."""


class Unauthorized(ApiError):
    """401: no key, or a key the server does not know (revoked, expired)."""


class Forbidden(ApiError):
    """403: the key's member may not do this (role, grant, purpose)."""


class NotFound(ApiError):
    """404: no such dataset, version, or resource for this member."""


class Conflict(ApiError):
    """409: the resource's state refuses it (or an Idempotency-Key reused for another request)."""


class BudgetExceeded(ApiError):
    """The query would spend more than the grant (or the member's share) has left."""


class TooManyRequests(ApiError):
    """429: still rate-limited after every retry."""


class ServerError(ApiError):
    """5xx: the server failed or was unavailable after every retry."""


class ConnectionFailed(VeilError):
    """The server could not be reached, or dropped the connection, after every retry."""

    @property
    def error_code(self) -> str:
        return "connection_failed"


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    429: TooManyRequests,
}


def error_of(problem: dict[str, Any]) -> ApiError:
    """The typed error of a problem document."""
    code = str(problem.get("code", ""))
    status = int(problem.get("status", 500))
    if code in BUDGET_CODES:
        return BudgetExceeded(problem)
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return kind(problem)
