"""Benchmark: loading the demo ``tax`` table through Veil against raw DuckDB reading the same file.

    .venv/bin/python bench/load.py [--rows 1000000] [--repeat 5] [--cluster] [--keep DIR]

The demo enterprise tables are generated (``rows`` = rows of ``tax``) with
``sandbox.demo.synthetic.write_parquet``; the tax table is also written as CSV by DuckDB. Each file
is then loaded two ways, each in a fresh subprocess so that its peak memory is its own:

- veil: ``connectors.load.ingest`` with the demo policy's ``tax`` table (the checks against the
  policy, conversion to the declared types, the workspace file, quality profiling and rules), as
  ``veil load`` runs it. Local Parquet whose types need no conversion is read by DuckDB itself;
  CSV streams through strict conversion;
- raw: ``CREATE TABLE tax AS SELECT * FROM read_parquet(…)`` / ``read_csv(…)`` (types
  auto-detected) into a new DuckDB file, then ``CHECKPOINT``;
- veil-clustered (``--cluster``): veil with ``cluster_by = "credit_code"`` (tables stored sorted
  by the privacy unit), to show what that costs.

The time is the load alone: the modules each method needs are imported before the clock starts
(their import time is recorded as ``import_seconds``; a server pays it once, ``veil load`` once
per run). Methods alternate within each repetition so that drift hits them alike; the summary
takes medians. Each run records the 1-minute load average before and after, since the machine
may be shared. Peak memory is the subprocess's ``ru_maxrss`` (self and children): DuckDB
allocates outside Python, so tracemalloc would not see it. The target (from the issue) is
veil ≤ 1.3 × raw in time. Results are merged into ``--out`` by row count.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET = 1.3
METHODS = ("veil", "raw")
CLUSTERED = "veil-clustered"
FORMATS = ("parquet", "csv")


def measure(method: str, fmt: str, source: Path, workdir: Path) -> dict[str, Any]:
    """One load in this (fresh) process: seconds, rows and peak RSS."""
    target = workdir / f"{method}-{fmt}.duckdb"
    target.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    imported = time.perf_counter()
    if method == "raw":
        import duckdb

        reader = "read_parquet(?)" if fmt == "parquet" else "read_csv(?, header = true)"
    else:
        from connectors.load import ingest
        from connectors.quality.rules import read_rules
        from policies.loader import parse_policy
    started = time.perf_counter()
    if method == "raw":
        con = duckdb.connect(str(target))
        con.execute(f"CREATE TABLE tax AS SELECT * FROM {reader}", [str(source)])
        con.execute("CHECKPOINT")
        row = con.execute("SELECT COUNT(*) FROM tax").fetchone()
        assert row is not None
        rows = int(row[0])
        con.close()
    else:
        text = (ROOT / "sandbox" / "demo" / "data" / "enterprise.toml").read_text(encoding="utf-8")
        policy = parse_policy(text, "enterprise.toml")
        tax = policy.table("tax")
        assert tax is not None
        policy = dataclasses.replace(policy, tables=(tax,))
        report = ingest(
            policy,
            str(source),
            target,
            rules=read_rules(tomllib.loads(text)),
            cluster_by="credit_code" if method == CLUSTERED else None,
        )
        rows = report.tables[0].rows
    seconds = time.perf_counter() - started
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    size = target.stat().st_size
    target.unlink(missing_ok=True)
    return {
        "method": method,
        "format": fmt,
        "rows": rows,
        "seconds": round(seconds, 3),
        "import_seconds": round(started - imported, 3),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak_kib / 1024, 1),
        "workspace_mb": round(size / 2**20, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def run_child(method: str, fmt: str, source: Path, workdir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--measure",
        method,
        "--format",
        fmt,
        "--source",
        str(source),
        "--workdir",
        str(workdir),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def prepare(rows: int, workdir: Path) -> dict[str, Path]:
    """Generate the files in a subprocess: this process stays small, and a child inherits its
    parent's peak RSS across fork and exec on Linux."""
    files = {"parquet": workdir / "parquet" / "tax.parquet", "csv": workdir / "tax.csv"}
    if all(f.exists() for f in files.values()):  # --keep of an earlier run with these rows
        return files
    command = [sys.executable, __file__, "--prepare", str(rows), "--workdir", str(workdir)]
    subprocess.run(command, check=True, cwd=ROOT)
    return files


def generate(rows: int, workdir: Path) -> None:
    import duckdb

    from sandbox.demo import synthetic

    started = time.perf_counter()
    paths = synthetic.write_parquet(workdir / "parquet", rows)
    parquet = paths["tax"]
    csv = workdir / "tax.csv"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{parquet}')) TO '{csv}' (HEADER, DELIMITER ',')"
    )
    con.close()
    print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)


def bench(rows: int, repeat: int, keep: Path | None, cluster: bool) -> dict[str, Any]:
    workdir = keep or Path(tempfile.mkdtemp(prefix="veil-bench-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    methods = (*METHODS, CLUSTERED) if cluster else METHODS
    try:
        files = prepare(rows, workdir)
        runs: list[dict[str, Any]] = []
        for fmt in FORMATS:
            for _ in range(repeat):
                for method in methods:  # alternate, so drift hits both alike
                    result = run_child(method, fmt, files[fmt], workdir)
                    print(json.dumps(result), file=sys.stderr)
                    runs.append(result)
        summary: dict[str, Any] = {}
        for fmt in FORMATS:
            mine = [r for r in runs if r["format"] == fmt]
            med = {
                m: statistics.median(r["seconds"] for r in mine if r["method"] == m)
                for m in methods
            }
            peak = {m: max(r["peak_rss_mb"] for r in mine if r["method"] == m) for m in methods}
            ratio = med["veil"] / med["raw"]
            loads = [x for r in mine for x in r["load_average"]]
            summary[fmt] = {
                "file_mb": round(files[fmt].stat().st_size / 2**20, 1),
                "veil_seconds": med["veil"],
                "raw_seconds": med["raw"],
                "veil_rows_per_s": round(rows / med["veil"]),
                "raw_rows_per_s": round(rows / med["raw"]),
                "veil_peak_rss_mb": peak["veil"],
                "raw_peak_rss_mb": peak["raw"],
                "time_ratio": round(ratio, 2),
                "within_target": ratio <= TARGET,
                "load_average_range": [min(loads), max(loads)],
            }
            if cluster:
                summary[fmt]["clustered_seconds"] = med[CLUSTERED]
                summary[fmt]["clustered_ratio"] = round(med[CLUSTERED] / med["raw"], 2)
                summary[fmt]["clustered_peak_rss_mb"] = peak[CLUSTERED]
        return {"rows": rows, "repeat": repeat, "summary": summary, "runs": runs}
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--cluster", action="store_true", help="Also load with cluster_by = the privacy unit."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    parser.add_argument(
        "--keep",
        type=Path,
        help="Generate into (and keep) this directory; files already there are reused.",
    )
    parser.add_argument("--measure", choices=(*METHODS, CLUSTERED), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:  # child: generate the files
        generate(args.prepare, args.workdir)
        return
    if args.measure:  # child: one measurement, one JSON line
        print(json.dumps(measure(args.measure, args.format, args.source, args.workdir)))
        return
    result = bench(args.rows, args.repeat, args.keep, args.cluster)
    existing: dict[str, Any] = {}
    if args.out.exists():
        existing = json.loads(args.out.read_text(encoding="utf-8"))
    sizes = {str(s["rows"]): s for s in existing.get("sizes", [])}
    sizes[str(args.rows)] = {**result, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    document = {
        "benchmark": "load the demo tax table: veil (connectors.load.ingest) vs raw DuckDB",
        "target": f"veil time <= {TARGET} x raw",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "sizes": [sizes[k] for k in sorted(sizes, key=int)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
