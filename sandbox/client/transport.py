"""HTTP for the client: one ``httpx`` connection pool, retries, and typed errors.

A call is retried when the server could not be reached or dropped the connection, when it
answers 503 (unavailable for now), 429 with a ``Retry-After`` header (a rate limit), or 409
because an earlier attempt with the same key is still running (``state: pending``). A
mutating call (POST, PUT, PATCH, DELETE) is retried only with an ``Idempotency-Key``, generated
once per call and sent with every attempt: if the first attempt was done but its answer lost,
the server replays the stored answer (``Idempotent-Replayed: true``) instead of doing it again,
so a retried query is never charged twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import httpx

from sandbox.client.errors import ConnectionFailed, error_of

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "Reply", "Retries", "Transport", "new_key"]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MUTATING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# 503s that will not pass by waiting: the server refuses everything until it is restarted.
_LASTING: Final = frozenset({"lockdown_failed", "audit_chain_broken"})


def new_key() -> str:
    """A fresh Idempotency-Key."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Retries:
    """How often and how long to retry: ``attempts`` in all (1 = never retry); the waits grow
    from ``backoff_s`` by doubling, and a ``Retry-After`` is honoured up to ``max_wait_s``."""

    attempts: int = 4
    backoff_s: float = 0.25
    max_wait_s: float = 10.0

    def wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), float(self.max_wait_s))
            except ValueError:
                pass
        return min(self.backoff_s * 2.0**attempt, self.max_wait_s)


@dataclass(frozen=True)
class Reply:
    """A successful answer: its JSON (or text) and whether the server replayed it."""

    body: Any
    replayed: bool


class Transport:
    def __init__(self, url: str, key: str, timeout: float, retries: Retries) -> None:
        self.retries = retries
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def request(
        self, method: str, path: str, idempotency_key: str | None = None, **kwargs: Any
    ) -> Reply:
        """Send the request, retrying as the module says; raise the typed error of a refusal."""
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        retryable = method not in MUTATING or idempotency_key is not None
        attempts = self.retries.attempts if retryable else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ConnectionFailed(
                        f"{method} {path}: {str(exc) or type(exc).__name__}"
                    ) from exc
                time.sleep(self.retries.wait(attempt, None))
                continue
            if not last and _transient(response):
                time.sleep(self.retries.wait(attempt, response.headers.get("retry-after")))
                continue
            return _reply(response)
        raise AssertionError("unreachable")  # pragma: no cover


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:200]}
    body.setdefault("status", response.status_code)
    return body


def _transient(response: httpx.Response) -> bool:
    if response.status_code == 429:
        return "retry-after" in response.headers
    if response.status_code == 503:
        return _problem(response).get("code") not in _LASTING
    if response.status_code == 409:  # an earlier attempt with this key is still running
        return _problem(response).get("state") == "pending"
    return False


def _reply(response: httpx.Response) -> Reply:
    if response.status_code >= 400:
        raise error_of(_problem(response))
    replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
    if response.status_code == 204:
        return Reply(None, replayed)
    if response.headers.get("content-type", "").startswith(("text/csv", "text/html")):
        return Reply(response.text, replayed)
    return Reply(response.json(), replayed)
