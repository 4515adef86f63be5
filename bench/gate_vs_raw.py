"""Benchmark: a DP query through Veil's gate and executor against the exact query in raw DuckDB.

    .venv/bin/python bench/gate_vs_raw.py [--rows 1000000 10000000] [--repeat 5]
                                          [--out bench/results/gate_vs_raw.json] [--diagnose]

For each size the demo ``enterprise`` tables are generated (``rows`` = rows of ``tax``) into a
temporary directory and loaded into a workspace. Each query is then timed two ways, alternately,
``--repeat`` times after one warm-up of each:

- gated: ``parse`` → ``check`` → ``plan`` → ``calibrate`` (ε = 1, pure) → ``Executor.run`` in a
  warm, locked-down worker (workers=1, threads=2) → ``release``; the three pieces are timed too;
- raw: the equivalent exact SQL (no bounding, no noise) on a plain read-only ``duckdb.connect``
  of the same workspace with the same ``threads``.

The target (from the issue) is ``gated ≤ 1.5 × raw + 50 ms`` on the medians.

``--diagnose`` adds, per query, in-process runs of the *generated* SQL and of variants of it (the
row-cap window removed, the clamps removed, …) on a connection configured like a worker's, to show
where the gated time goes. They are measurements only; the library is not changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from connectors.synthetic import write_parquet
from policies import gate
from policies.accounting import Accounting, to_micro
from policies.loader import load_policy
from sandbox.executor import Executor, ExecutorLimits
from sandbox.noise import calibrate, release
from sandbox.workspace import build_workspace

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "sandbox" / "demo" / "enterprise.toml"
SALT = 0x5EED_1234
EPSILON = 1.0
DELTA_PICO = 10**5  # δ = 1e-7
RATIO_TARGET = 1.5
FIXED_TARGET_S = 0.050


@dataclass(frozen=True)
class Query:
    name: str
    gated: str
    raw: str


QUERIES = (
    Query(
        "a: industry, 2023, join",
        "SELECT industry, COUNT(*) AS n, SUM(revenue) AS total, AVG(revenue) AS mean "
        "FROM tax JOIN registry USING (credit_code) WHERE year(month) = 2023 GROUP BY industry",
        "SELECT industry, count(*), sum(revenue), avg(revenue) "
        "FROM tax JOIN registry USING (credit_code) WHERE year(month) = 2023 GROUP BY industry",
    ),
    Query(
        "b: district, join",
        "SELECT district, COUNT(*), AVG(tax_paid) "
        "FROM tax JOIN registry USING (credit_code) GROUP BY district",
        "SELECT district, count(*), avg(tax_paid) "
        "FROM tax JOIN registry USING (credit_code) GROUP BY district",
    ),
    Query(
        "c: year, tax only",
        "SELECT year(month) AS y, COUNT(*), AVG(revenue) FROM tax GROUP BY y",
        "SELECT year(month) AS y, count(*), avg(revenue) FROM tax GROUP BY y",
    ),
)


# --- timing helpers ----------------------------------------------------------------------------


def summary(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "samples_s": list(samples),
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def repeat_timed(fn: Callable[[], object], repeat: int) -> tuple[dict[str, Any], object]:
    fn()  # warm-up
    samples = []
    out: object = None
    for _ in range(repeat):
        elapsed, out = timed(fn)
        samples.append(elapsed)
    return summary(samples), out


# --- the two sides -----------------------------------------------------------------------------


def gated_run(
    executor: Executor, workspace: Path, policy: Any, sql: str
) -> tuple[dict[str, float], Any, Any]:
    """One full gated query; returns the time of each piece, the plan and the release."""
    t0 = time.perf_counter()
    checked = gate.check(gate.parse(sql), policy)
    plan = gate.plan(checked, policy, salt=SALT)
    calibration = calibrate(plan, to_micro(EPSILON), Accounting.PURE, delta_pico=DELTA_PICO)
    t1 = time.perf_counter()
    params = list(plan.params)
    rows = executor.run(workspace, plan.sql, params)
    histograms = {q.name: executor.run(workspace, q.histogram_sql, params) for q in plan.quantiles}
    t2 = time.perf_counter()
    released = release(plan, calibration, rows, histograms)
    t3 = time.perf_counter()
    pieces = {"gate_plan_calibrate": t1 - t0, "engine": t2 - t1, "release": t3 - t2}
    return {"total": t3 - t0, **pieces}, plan, released


def raw_connection(workspace: Path, threads: int, memory_limit: str | None = None) -> Any:
    config: dict[str, Any] = {"threads": threads}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    return duckdb.connect(str(workspace), read_only=True, config=config)


def fetch(con: Any, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    cursor = con.cursor()
    try:
        return cursor.execute(sql, list(params)).fetchall()
    finally:
        cursor.close()


# --- diagnostics: variants of the generated SQL -------------------------------------------------

_BND = re.compile(
    r"bnd AS \(SELECT \* FROM \(SELECT \*, row_number\(\) OVER \(PARTITION BY __unit "
    r"ORDER BY (?P<order>hash\([^)]*\))\) AS __r FROM (?P<prev>\w+)\) WHERE __r <= (?P<cap>\d+)\)"
)
_FIXED_SUM = re.compile(
    r"sum\(CAST\(round\(least\(greatest\(CAST\((?P<v>v\d+) AS DOUBLE\), [^)]*\), [^)]*\) \* \d+\) "
    r"AS BIGINT\)\)"
)


def variants(sql: str) -> dict[str, tuple[str, bool]]:
    """Rewrites of the generated SQL: name -> (sql, whether its rows must equal the original's).

    Empty if the generated SQL no longer has the shape these rewrites expect.
    """
    match = _BND.search(sql)
    if match is None:
        return {}
    order, prev, cap = match["order"], match["prev"], match["cap"]
    no_cap = sql[: match.start()] + f"bnd AS (SELECT * FROM {prev})" + sql[match.end() :]
    unordered = sql.replace(f" ORDER BY {order})", ")", 1)
    # Same semantics as the generated CTE: only units above the cap go through the window.
    heavy = (
        f"heavy AS (SELECT __unit FROM {prev} GROUP BY __unit HAVING count(*) > {cap}), "
        f"bnd AS (SELECT * FROM {prev} ANTI JOIN heavy USING (__unit) UNION ALL "
        f"SELECT * EXCLUDE (__r) FROM (SELECT *, row_number() OVER (PARTITION BY __unit "
        f"ORDER BY {order}) AS __r FROM {prev} SEMI JOIN heavy USING (__unit)) "
        f"WHERE __r <= {cap})"
    )
    heavy_only = sql[: match.start()] + heavy + sql[match.end() :]
    no_clamp = _FIXED_SUM.sub(lambda m: f"sum({m['v']})", sql)
    no_units = sql.replace("count(DISTINCT __unit)", "count(*)")
    bare = _FIXED_SUM.sub(lambda m: f"sum({m['v']})", no_cap).replace(
        "count(DISTINCT __unit)", "count(*)"
    )
    out = {
        "no_row_cap": (no_cap, True),  # equal here: no unit exceeds the cap in the demo data
        "row_cap_heavy_units_only": (heavy_only, True),
        "window_without_order": (unordered, True),
        "no_clamp_fixed_point": (no_clamp, False),
        "no_distinct_units": (no_units, False),
        "no_row_cap_no_clamp_no_distinct": (bare, False),
    }
    return {k: v for k, v in out.items() if v[0] != sql}


def diagnose(
    workspace: Path,
    limits: ExecutorLimits,
    plan: Any,
    raw_sql: str,
    repeat: int,
    engine_median: float,
    executor: Executor,
) -> dict[str, Any]:
    params = list(plan.params)
    out: dict[str, Any] = {"generated_sql": plan.sql}
    con = raw_connection(workspace, limits.threads, limits.memory_limit)
    try:
        base_stats, base_rows = repeat_timed(lambda: fetch(con, plan.sql, params), repeat)
        out["inprocess_generated"] = base_stats
        out["process_hop_and_lockdown_s"] = engine_median - base_stats["median_s"]
        expected = sorted(base_rows, key=repr)  # type: ignore[arg-type]
        for name, (sql, must_match) in variants(plan.sql).items():
            stats, rows = repeat_timed(lambda sql=sql: fetch(con, sql, params), repeat)  # type: ignore[misc]
            stats["sql"] = sql
            if must_match:
                stats["same_rows_as_generated"] = sorted(rows, key=repr) == expected  # type: ignore[arg-type]
            out[name] = stats
    finally:
        con.close()
    sweep: dict[str, Any] = {}
    cpus = os.cpu_count() or 1
    for threads in sorted({1, limits.threads, cpus, 2 * cpus}):
        con = raw_connection(workspace, threads, limits.memory_limit)
        try:
            gen, _ = repeat_timed(lambda con=con: fetch(con, plan.sql, params), repeat)  # type: ignore[misc]
            raw, _ = repeat_timed(lambda con=con: fetch(con, raw_sql), repeat)  # type: ignore[misc]
        finally:
            con.close()
        sweep[str(threads)] = {
            "generated_median_s": gen["median_s"],
            "raw_median_s": raw["median_s"],
            "ratio": gen["median_s"] / raw["median_s"],
        }
    out["threads_inprocess"] = sweep
    hop, _ = repeat_timed(lambda: executor.run(workspace, "SELECT 1"), max(repeat, 20))
    out["executor_select_1"] = hop
    return out


# --- one size ----------------------------------------------------------------------------------


def bench_size(
    rows: int, repeat: int, threads: int, work: Path, policy: Any, diagnostics: bool
) -> dict[str, Any]:
    data_dir = work / f"rows-{rows}"
    gen_s, paths = timed(lambda: write_parquet(data_dir, rows))
    workspace = data_dir / "workspace.duckdb"
    build_s, counts = timed(lambda: build_workspace(workspace, paths))  # type: ignore[arg-type]
    print(
        f"\n== {rows:,} tax rows: generated in {gen_s:.1f} s, workspace built in {build_s:.1f} s "
        f"({workspace.stat().st_size / 2**20:.0f} MiB) {counts}",
        flush=True,
    )
    limits = ExecutorLimits(workers=1, threads=threads)
    result: dict[str, Any] = {
        "rows": rows,
        "table_rows": counts,
        "generate_s": gen_s,
        "build_workspace_s": build_s,
        "workspace_bytes": workspace.stat().st_size,
        "queries": [],
    }
    with Executor(limits, work / f"executor-{rows}") as executor:
        plans: list[Any] = []
        con = raw_connection(workspace, threads)
        try:
            for query in QUERIES:
                # Warm-up of both sides (the first run opens and verifies the worker's instance).
                gated_run(executor, workspace, policy, query.gated)
                fetch(con, query.raw)
                gated: list[dict[str, float]] = []
                raw: list[float] = []
                plan = released = None
                for _ in range(repeat):  # alternate, so drift hits both sides alike
                    gc.collect()
                    pieces, plan, released = gated_run(executor, workspace, policy, query.gated)
                    gated.append(pieces)
                    raw.append(timed(lambda q=query: fetch(con, q.raw))[0])  # type: ignore[misc]
                g = summary([p["total"] for p in gated])
                r = summary(raw)
                allowed = RATIO_TARGET * r["median_s"] + FIXED_TARGET_S
                entry: dict[str, Any] = {
                    "query": query.name,
                    "gated_sql": query.gated,
                    "raw_sql": query.raw,
                    "gated": g,
                    "gated_pieces_median_s": {
                        k: statistics.median(p[k] for p in gated)
                        for k in ("gate_plan_calibrate", "engine", "release")
                    },
                    "raw": r,
                    "ratio": g["median_s"] / r["median_s"],
                    "overhead_s": g["median_s"] - r["median_s"],
                    "allowed_s": allowed,
                    "pass": g["median_s"] <= allowed,
                    "released_cells": len(released.rows) if released is not None else None,
                    "row_cap": plan.row_cap if plan is not None else None,
                }
                print_row(rows, entry)
                result["queries"].append(entry)
                plans.append(plan)
        finally:
            # DuckDB refuses a second instance of one file with another configuration in the same
            # process, so the diagnostics open their own connections only after this one is closed.
            con.close()
        if diagnostics:
            for query, entry, plan in zip(QUERIES, result["queries"], plans, strict=True):
                print(f"{'':>12}-- {query.name}")
                entry["diagnostics"] = diagnose(
                    workspace,
                    limits,
                    plan,
                    query.raw,
                    repeat,
                    entry["gated_pieces_median_s"]["engine"],
                    executor,
                )
                print_diagnostics(entry["diagnostics"])
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


# --- output ------------------------------------------------------------------------------------

HEADER = (
    f"{'rows':>11} {'query':<26} {'gated med':>9} {'min':>7} {'raw med':>8} {'min':>7} "
    f"{'ratio':>6} {'overhead':>8} {'allowed':>8}  {'gate':>6} {'engine':>7} {'release':>7}  ok"
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def print_row(rows: int, e: dict[str, Any]) -> None:
    p = e["gated_pieces_median_s"]
    print(
        f"{rows:>11,} {e['query']:<26} {ms(e['gated']['median_s']):>9} "
        f"{ms(e['gated']['min_s']):>7} {ms(e['raw']['median_s']):>8} {ms(e['raw']['min_s']):>7} "
        f"{e['ratio']:>5.2f}x {ms(e['overhead_s']):>8} {ms(e['allowed_s']):>8}  "
        f"{ms(p['gate_plan_calibrate']):>6} {ms(p['engine']):>7} {ms(p['release']):>7}  "
        f"{'PASS' if e['pass'] else 'FAIL'}",
        flush=True,
    )


def print_diagnostics(d: dict[str, Any]) -> None:
    print(
        f"{'':>12}in-process generated SQL {ms(d['inprocess_generated']['median_s'])} ms; "
        f"process hop + lockdown {ms(d['process_hop_and_lockdown_s'])} ms; "
        f"executor SELECT 1 {d['executor_select_1']['median_s'] * 1000:.1f} ms"
    )
    for name, v in d.items():
        if isinstance(v, dict) and "sql" in v:
            same = v.get("same_rows_as_generated")
            note = "" if same is None else f" (same rows: {same})"
            print(f"{'':>12}{name:<34} {ms(v['median_s']):>6} ms{note}")
    for threads, v in d["threads_inprocess"].items():
        print(
            f"{'':>12}threads={threads:<3} generated {ms(v['generated_median_s']):>6} ms, "
            f"raw {ms(v['raw_median_s']):>6} ms, ratio {v['ratio']:.2f}x"
        )


def machine() -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    cpu_model = None
    meminfo = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                meminfo = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    try:  # read-only: --no-optional-locks keeps git status from touching the index
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": meminfo,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "duckdb": duckdb.__version__,
        "opendp": version("opendp"),
        "sqlglot": version("sqlglot"),
        "git_commit": commit,
        "git_worktree_dirty": dirty,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="worker and raw DuckDB threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gate_vs_raw.json")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp directory")
    parser.add_argument(
        "--diagnose", action="store_true", help="also time variants of the generated SQL"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or any(r < 1 for r in args.rows):
        parser.error("--repeat and --rows must be at least 1")

    policy = load_policy(POLICY)
    info = machine()
    print(
        f"{info['cpu_count']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"DuckDB {info['duckdb']}, threads={args.threads}, repeat={args.repeat}; "
        f"target: gated <= {RATIO_TARGET} x raw + {FIXED_TARGET_S * 1000:.0f} ms (medians, ms below)"
    )
    print(HEADER)
    results = []
    with tempfile.TemporaryDirectory(prefix="veil-bench-", dir=args.workdir) as tmp:
        for rows in args.rows:
            results.append(
                bench_size(rows, args.repeat, args.threads, Path(tmp), policy, args.diagnose)
            )

    doc = {
        "benchmark": "gate_vs_raw",
        "machine": info,
        "settings": {
            "repeat": args.repeat,
            "threads": args.threads,
            "executor": {"workers": 1, "threads": args.threads, "memory_limit": "2GB"},
            "epsilon": EPSILON,
            "accounting": "pure",
            "delta": DELTA_PICO / 10**12,
            "salt": SALT,
            "target": f"gated_median <= {RATIO_TARGET} * raw_median + {FIXED_TARGET_S} s",
        },
        "sizes": results,
    }
    print("\n" + HEADER)
    for size in results:
        for entry in size["queries"]:
            print_row(size["rows"], entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
