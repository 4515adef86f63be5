"""Label values: only identifiers Veil defines, never what a caller wrote or a data value."""

from __future__ import annotations

import re

OTHER = "other"
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def token(value: str | None) -> str:
    """``value`` if it looks like an identifier Veil defines (a code, a template or dataset
    id, an outcome), else ``other``."""
    return value if value is not None and _TOKEN.fullmatch(value) else OTHER
