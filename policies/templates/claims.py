"""Claims: what a requester asserts, checked against the template before anything is run.

A claim is an integer (a declared amount within the template's bounds, or ``N`` picked from its
fixed set) or ``None`` for templates that ask about the record alone. A claim that does not fit is
an :class:`~policies.errors.InvalidClaim` naming the rule; it never reaches a query.
"""

from __future__ import annotations

from policies.errors import InvalidClaim
from policies.templates.model import ClaimType, Template

Claim = int | None
"""A requester's claim: an integer (a declared amount, or ``N`` picked from a fixed set) or
``None`` for templates without a claim."""


def check_claim(template: Template, claim: object) -> Claim:
    """Validate a requester's claim against the template; returns it as a :data:`Claim`."""
    spec = template.claim
    if spec.type == ClaimType.NONE:
        if claim is not None:
            raise InvalidClaim(f"{template.id} takes no claim", rule="claim_none")
        return None
    if not isinstance(claim, int) or isinstance(claim, bool):
        raise InvalidClaim(f"{template.id} takes an integer claim", rule="claim_type")
    if spec.type == ClaimType.CHOICE:
        if claim not in spec.choices:
            raise InvalidClaim(
                f"{template.id} takes one of {list(spec.choices)}", rule="claim_choice"
            )
        return claim
    assert spec.minimum is not None and spec.maximum is not None
    if not spec.minimum <= claim <= spec.maximum:
        raise InvalidClaim(
            f"{template.id} takes a claim between {spec.minimum} and {spec.maximum}",
            rule="claim_range",
        )
    return claim
