"""Who acts: tenants, members and their roles. A member's role decides what it may call; deny by
default.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
