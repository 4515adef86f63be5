"""Encryption at rest: what sealing costs a load, what decrypting costs a server, and what a
query pays once the version is decrypted.

Builds the demo enterprise workspace at ``--rows`` tax rows (plain, as a load does), then times
``seal`` (the end of every load), ``open_sealed`` into the runtime directory (once per version
per server process: the first request, or the warm-up at start) and the lease a query takes on
an already decrypted version (every query). Writes ``bench/results/vault.json``.

    .venv/bin/python bench/vault.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.sink import build_workspace  # noqa: E402
from sandbox.demo import synthetic  # noqa: E402
from sandbox.keys.master import MasterKeyRing  # noqa: E402
from sandbox.vault.decrypted import Vault, runtime_root  # noqa: E402
from sandbox.vault.sealed import open_sealed, seal  # noqa: E402


class _Version:
    def __init__(self, path: Path) -> None:
        self.dataset, self.version, self.path = "enterprise", 1, path


def _mib_s(size: int, seconds: float) -> float:
    return round(size / 2**20 / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="Rows of the tax table.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/vault.json")
    args = parser.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="veil-bench-vault-"))
    runtime = runtime_root(None)
    keys = MasterKeyRing("mk-bench", {"mk-bench": MasterKeyRing.new_data_key()})
    try:
        sources = synthetic.write_parquet(work / "sources", args.rows)
        plain = work / "plain.duckdb"
        build_workspace(plain, dict(sources), cluster_by="credit_code")
        size = plain.stat().st_size
        stored = work / "v1.sealed"

        seal_s = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            seal(plain, stored, keys, "enterprise", 1)
            seal_s.append(time.perf_counter() - started)
        open_s = []
        for _ in range(args.repeat):
            target = runtime / f"veil-bench-{os.getpid()}.duckdb"
            started = time.perf_counter()
            open_sealed(stored, target, keys, "enterprise", 1)
            open_s.append(time.perf_counter() - started)
            assert target.stat().st_size == size
            target.unlink()

        version = _Version(stored)
        with Vault(keys, None) as vault:
            with vault.lease(version):
                pass  # the one decryption
            leases = []
            for _ in range(10_000):
                started = time.perf_counter()
                with vault.lease(version):
                    pass
                leases.append(time.perf_counter() - started)
        seal_med, open_med = statistics.median(seal_s), statistics.median(open_s)
        result: dict[str, Any] = {
            "benchmark": "encryption at rest (bench/vault.py)",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "processor": platform.machine(),
                "python": platform.python_version(),
                "runtime_dir": str(runtime),
            },
            "workspace": {"tax_rows": args.rows, "bytes": size},
            "seal": {
                "median_s": round(seal_med, 3),
                "mib_per_s": _mib_s(size, seal_med),
                "sealed_overhead_bytes": stored.stat().st_size - size,
            },
            "decrypt_to_runtime": {
                "median_s": round(open_med, 3),
                "mib_per_s": _mib_s(size, open_med),
            },
            "lease_decrypted_us": {
                "p50": round(statistics.median(leases) * 1e6, 1),
                "p99": round(sorted(leases)[int(len(leases) * 0.99)] * 1e6, 1),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
