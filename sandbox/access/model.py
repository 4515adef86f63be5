"""Who acts: tenants, members and their roles, and the :class:`Actor` every service call names.
A member's role decides what it may call; deny by default.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sandbox.audit.request import RequestRecord
from sandbox.errors import Forbidden

KEY_PREFIX = "veil_"
SUBJECT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")


class MemberRole(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    PROVIDER = "provider"
    ANALYST = "analyst"
    VERIFIER = "verifier"
    AUDITOR = "auditor"
    SUBJECT = "subject"  # speaks for one data subject (an enterprise): consents, own receipts
    AUTHORITY = "authority"  # the authorising body: the operator's authorisation of each zone


class TenantKind(StrEnum):
    BANK = "bank"
    RESEARCH = "research"
    GOVERNMENT = "government"
    OTHER = "other"


class PurposeClass(StrEnum):
    PUBLIC_WELFARE = "public_welfare"  # free within conditions
    COMMERCIAL = "commercial"  # paid, capped tariff


# Zone staff see every tenant; everyone else only their own (others answer 404).
ZONE_WIDE = (MemberRole.ADMIN, MemberRole.AUDITOR)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    kind: TenantKind
    purpose_class: PurposeClass


@dataclass(frozen=True)
class Member:
    id: str
    tenant_id: str
    name: str
    role: MemberRole
    subject_id: str | None = None  # the subject a ``subject`` member speaks for
    key_id: str | None = field(default=None, compare=False)  # the API key it authenticated with

    def require(self, *roles: MemberRole) -> None:
        """Refuse unless this member has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this call needs the role {allowed}", role=self.role.value)

    def sees_tenant(self, tenant_id: str) -> bool:
        return self.role in ZONE_WIDE or tenant_id == self.tenant_id


class ActorKind(StrEnum):
    MEMBER = "member"  # a member, by its API key (over HTTP, or a library caller)
    LOCAL = "local"  # the local administrator: the CLI working on a data directory
    SYSTEM = "system"  # the server's own background work


@dataclass(frozen=True)
class Actor:
    """Who acts, named explicitly on every service call that reads or changes zone state.

    Authorisation reads it (:meth:`require`, :meth:`sees_tenant`) and the audit log records it
    (with the HTTP request being served, if any). The local administrator — whoever holds the
    data directory — has every right over it; the system has none that a role grants."""

    kind: ActorKind
    member: Member | None = None
    user: str | None = None  # the operating-system user of the local administrator
    request: RequestRecord | None = field(default=None, compare=False)

    @classmethod
    def of(cls, member: Member, request: RequestRecord | None = None) -> Actor:
        return cls(ActorKind.MEMBER, member=member, request=request)

    @classmethod
    def local(cls) -> Actor:
        return cls(ActorKind.LOCAL, user=_os_user())

    @classmethod
    def system(cls) -> Actor:
        return cls(ActorKind.SYSTEM)

    def require(self, *roles: MemberRole) -> None:
        """Refuse unless the actor is a member with one of ``roles``, or the local
        administrator."""
        if self.kind != ActorKind.LOCAL:
            self.require_member(*roles)

    def require_member(self, *roles: MemberRole) -> Member:
        """The member acting, who must have one of ``roles``: for calls only a member makes
        (a query, a verification), whatever else holds the data directory."""
        if self.member is None:
            raise Forbidden(f"this call is made by a member, not the {self.kind.value} actor")
        self.member.require(*roles)
        return self.member

    def sees_tenant(self, tenant_id: str) -> bool:
        return self.kind == ActorKind.LOCAL or (
            self.member is not None and self.member.sees_tenant(tenant_id)
        )

    def annotate(self, *, sealed: dict[str, Any] | None = None, **refs: Any) -> None:
        """Add to the record of the request being served, if any (see
        :meth:`RequestRecord.annotate`)."""
        if self.request is not None:
            self.request.annotate(sealed=sealed, **refs)

    def document(self) -> dict[str, Any]:
        """The ``actor`` member of an audit entry."""
        if self.member is not None:
            return {
                "type": "member",
                "member": self.member.id,
                "tenant": self.member.tenant_id,
                "role": self.member.role.value,
                "key": self.member.key_id,
            }
        found: dict[str, Any] = {"type": self.kind.value}
        if self.user is not None:
            found["user"] = self.user
        return found


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
