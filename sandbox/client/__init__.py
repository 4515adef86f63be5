"""The Python client of a Veil server (docs/client.md)::

from sandbox.client import Client

with Client("http://127.0.0.1:8000", key) as veil:
    answer = veil.query("cps1988", "SELECT AVG(wage) AS w FROM cps1988", epsilon=0.5)
    answer.to_pandas()  # output, value, ci_low, ci_high
"""

from sandbox.client.errors import (
    ApiError,
    BadRequest,
    BudgetExceeded,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    RemoteError,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from sandbox.client.results import Budget, Cell, Dataset, Preview, QueryResult
from sandbox.client.session import Client
from sandbox.client.transport import Retries

__all__ = [
    "ApiError",
    "BadRequest",
    "Budget",
    "BudgetExceeded",
    "Cell",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "Forbidden",
    "NotFound",
    "Preview",
    "QueryResult",
    "RemoteError",
    "Retries",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
]
