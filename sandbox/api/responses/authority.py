"""The wire form of a zone's operator authorisation and its exit certificate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandbox.api.responses.base import View
from sandbox.onboarding import authority


class Authorisation(View):
    mirrors = authority.Authorisation
    omit_none = frozenset({"certificate"})

    zone: str
    state: str
    datasets: list[str] | None
    products: list[str] | None
    term_start: datetime
    term_end: datetime | None
    updated_at: datetime
    certificate: dict[str, Any] | None = None


class ExitCertificate(View):
    mirrors = authority.ExitCertificate

    document: dict[str, Any]
    key: str
    signature: str
