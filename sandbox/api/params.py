"""Query parameter types that more than one route could take.

:data:`DateTimeParam` is the one type of a date-time query parameter (``/v1/ledger``'s ``since``
and ``until``): an RFC 3339 ``date-time`` — a date, ``T``, a time of day with seconds (a
fraction allowed) and an offset (``Z`` or ``±hh:mm``) — and nothing else. A bare date is not
one (whose midnight?), nor a date-time without an offset, nor a number (which a lenient parser
reads as seconds since 1970), nor the variants such a parser also takes (no seconds, ``+0800``,
a space for the ``T``). A refusal is the usual request-validation problem naming the parameter
(``query.<name>``, rule ``date_time_rfc3339``). A ``+`` in a query string means a space, so an
offset such as ``+08:00`` is sent as ``%2B08:00``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["RFC3339", "DateTimeParam"]

RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError(
        "date_time_rfc3339",
        "an RFC 3339 date-time with an offset, e.g. 2026-03-01T08:30:00Z (not a date alone, "
        "not a number)",
    )


DateTimeParam = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
