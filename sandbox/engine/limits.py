"""Resource limits of the executor pool and of each worker process, with the measurements that
set their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sandbox.engine.workspace import parse_size

Row = tuple[object, ...]
# Address space (RLIMIT_AS), measured on this host (Linux x86_64, DuckDB 2.0.0, Python 3.11, the
# worker imports duckdb + pyarrow), threads=2:
# - an idle worker with one open instance has ~0.8-1.1 GiB of virtual memory (thread stacks,
#   allocator arenas); DuckDB itself runs even under a 0.5 GiB cap for trivial queries;
# - memory_limit=2GB, 20M-row workspace, window + group-by that spills: peak 3.2-3.7 GiB virtual;
#   it fails with OutOfMemoryException under a 3 GiB cap and passes at 4 GiB. A 100M-row sort
#   peaks at 3.6 GiB under a 4 GiB cap. 8 threads need ~1.5 GiB more. So the floor is roughly
#   memory_limit + 1.5 GiB + 0.25 GiB per thread; each cached idle instance adds a little more.
# - bombs: under a 4 GiB cap repeat('x', 3e9), range(0, 3e8) and list_resize fail at once (they
#   ask for one 4 GiB block); under 6-8 GiB they succeed after 5-40 s. lpad('x', 2e9, 'y') ran
#   20-87 s at every cap, ignoring max_execution_time: only the watchdog stops it.
# The default below (memory_limit 2GB, 6 GiB cap) leaves room for legitimate spilling queries and
# bounds a bomb to 6 GiB per worker; size workers x address_space_bytes to fit the host's RAM.
_MIN_HEADROOM: Final = 2**30  # a sanity floor only; heavy queries need the margin measured above


@dataclass(frozen=True)
class ExecutorLimits:
    """Resource limits of the pool and of each worker (see the RLIMIT_AS finding above)."""

    workers: int = 2
    threads: int = 2
    memory_limit: str = "2GB"
    address_space_bytes: int = 6 * 2**30
    timeout_s: float = 30.0
    # The engine gets ``timeout_s`` as its own deadline (a clean InterruptException, worker stays
    # warm); the parent kills the worker only if it is still silent ``kill_grace_s`` later.
    kill_grace_s: float = 1.0
    max_temp_bytes: int = 8 * 2**30
    queue_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    connection_cache_size: int = 8
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads < 1 or self.connection_cache_size < 1:
            raise ValueError("workers, threads and connection_cache_size must be at least 1")
        if min(self.timeout_s, self.kill_grace_s, self.queue_timeout_s, self.start_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_result_rows < 1 or self.max_result_bytes < 1 or self.max_temp_bytes < 0:
            raise ValueError("result and temp limits must be positive")
        if self.address_space_bytes < parse_size(self.memory_limit) + _MIN_HEADROOM:
            raise ValueError("address_space_bytes must exceed memory_limit by at least 1 GiB")

    @property
    def max_execution_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))
