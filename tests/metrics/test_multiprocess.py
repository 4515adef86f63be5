"""prometheus-client's multiprocess mode: counters of several server processes, summed by a
scrape of any of them (docs/operations.md#several-server-processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COUNT = """
from sandbox.metrics.instruments import Metrics, multiprocess
assert multiprocess()
metrics = Metrics()
metrics.request("/v1/queries", "POST", 200, 0.01)
metrics.refused("unit_filter")
"""

SCRAPE = """
from sandbox.metrics.instruments import Metrics
print(Metrics().exposition().decode())
"""


def _python(code: str, directory: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return done.stdout


def test_a_scrape_sums_the_counters_of_every_process(tmp_path: Path) -> None:
    for _ in range(3):  # three server processes, each with its own pid
        _python(COUNT, tmp_path)
    text = _python(SCRAPE, tmp_path)
    assert 'veil_http_requests_total{method="POST",route="/v1/queries",status="200"} 3.0' in text
    assert 'veil_refusals_total{code="unit_filter"} 3.0' in text
    assert 'veil_http_request_duration_seconds_count{route="/v1/queries"} 3.0' in text
