"""Benchmark: the timing side channel of DP queries — does an answer's latency tell the data?

    .venv/bin/python bench/timing_channel.py [--rows 360000] [--samples 60]
        [--phases grid nogrid] [--epsilon 0.0003] [--out bench/results/timing_channel.json]
        [--keep]

The attack: many cheap queries shaped
``SELECT COUNT(*) FROM tax JOIN social_insurance USING (credit_code) WHERE revenue >= X`` at
X = 1e4, 1e5, 1e6, 5e6 (from about 90% of the rows selected down to under 1%), each at
ε ≈ 0.0003, timed by the client. If the engine's work follows what the predicate selects, the
latencies draw the revenue distribution for free.

What it does:

1. builds the demo zone (``build_demo(..., rows=--rows)``, ``rows`` = rows of ``tax``; the
   default is the demo's own size) in a temporary data directory;
2. per phase, starts a real server in a subprocess (uvicorn, ``create_app``, the default
   executor: 2 workers of 2 DuckDB threads) and waits for ``/healthz``:

   - ``grid``: the default settings (the unpruned SQL, answers released on the time grid);
   - ``nogrid``: ``query_grid_ms = 0`` (the unpruned SQL alone, answers out when ready);
   - ``asis``: no setting changed (for a checkout without the grid, e.g. the code before it);

3. sends ``--warmup`` unmeasured queries, then ``--samples`` rounds; each round sends one query
   per threshold, in a random order (drift and load hit every level alike), over one
   keep-alive ``http.client`` connection, each a new question (ε differs by 10⁻⁶ from query to
   query, so none is answered from the cache);
4. writes, per phase and threshold, the latency distribution (median, quartiles, p10/p90, min,
   max, every sample) and, across thresholds, the Kruskal–Wallis H test and the Mann–Whitney U
   test of the two extreme thresholds (scipy), with the 1-minute load average before and after.

The target: no detectable difference, p > 0.01 with 60 samples per level, on the
grid phase. The latency cost is the grid phase's median against the nogrid phase's.

``--engine`` adds in-process engine timings (no server): the generated SQL of a few query shapes
at each threshold, in its current form and in the pruning form Veil ran before
(``plan(..., pruning=True)``), on an in-memory DuckDB with 2 threads, with the CPU time of the
process (less sensitive than wall time to other jobs on a shared host). They show what each form
costs, and how much of the data each one lets through into the run time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy import stats  # type: ignore[import-untyped]  # noqa: E402

ATTACK = "SELECT COUNT(*) FROM tax JOIN social_insurance USING (credit_code) WHERE revenue >= {x}"
THRESHOLDS = (1e4, 1e5, 1e6, 5e6)
PHASES = {
    "grid": {},  # the defaults
    "nogrid": {"query_grid_ms": 0.0},
    "asis": {},
}
ALPHA = 0.01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve(data_dir: str, port: str, changes: str) -> None:
    """The server subprocess (``--serve``)."""
    import uvicorn

    from sandbox.config import Settings
    from server import create_app

    settings = Settings(data_dir=Path(data_dir), **json.loads(changes))
    uvicorn.run(
        create_app(settings), host="127.0.0.1", port=int(port), log_level="warning",
        access_log=False,
    )  # fmt: skip


def build(data_dir: Path, rows: int) -> dict[str, str]:
    from sandbox.audit.log import AuditLog
    from sandbox.config import Settings
    from sandbox.demo.build import build_demo
    from sandbox.store import db

    settings = Settings(data_dir=data_dir)
    engine = db.connect(settings.state_url)
    audit = AuditLog.open(engine, settings.keys_path)
    keys = build_demo(engine, data_dir, rows=rows, audit=audit)
    engine.dispose()
    return keys


class _Wire:
    """A bare keep-alive HTTP/1.1 client: the latency is the server's, not a client library's."""

    def __init__(self, port: int, key: str) -> None:
        self._con = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self._auth = f"Bearer {key}"

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        data = json.dumps(body).encode()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        started = time.perf_counter()
        self._con.request("POST", path, body=data, headers=headers)
        response = self._con.getresponse()
        text = response.read()
        elapsed = time.perf_counter() - started
        return response.status, json.loads(text), elapsed

    def close(self) -> None:
        self._con.close()


def _distribution(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=20)  # 5% steps
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p10_ms": round(q[1], 2),
        "q1_ms": round(q[4], 2),
        "q3_ms": round(q[14], 2),
        "p90_ms": round(q[17], 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
        "samples_ms": [round(s * 1000, 2) for s in seconds],
    }


def _tests(by_level: dict[float, list[float]]) -> dict[str, Any]:
    groups = [by_level[x] for x in THRESHOLDS]
    h, p_kw = stats.kruskal(*groups)
    u, p_mw = stats.mannwhitneyu(groups[0], groups[-1], alternative="two-sided")
    return {
        "kruskal_wallis": {"h": round(float(h), 4), "p": float(p_kw)},
        "mann_whitney_extremes": {
            "levels": [THRESHOLDS[0], THRESHOLDS[-1]],
            "u": float(u),
            "p": float(p_mw),
        },
        "detectable_at_0.01": bool(min(p_kw, p_mw) <= ALPHA),
    }


def run_phase(
    phase: str, data_dir: Path, keys: dict[str, str], args: argparse.Namespace, offset: int
) -> dict[str, Any]:
    port = _free_port()
    changes = json.dumps(PHASES[phase])
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(data_dir), str(port), changes], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                con = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                con.request("GET", "/healthz")
                if con.getresponse().status == 200:
                    con.close()
                    break
                con.close()
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the {phase} server did not start")
            time.sleep(0.2)
        wire = _Wire(port, keys["analyst"])
        counter = offset

        def ask(x: float) -> float:
            nonlocal counter
            counter += 1
            epsilon = round(args.epsilon + counter * 1e-6, 6)  # a new question: no cached answer
            body = {"dataset": "enterprise", "sql": ATTACK.format(x=x), "epsilon": epsilon}
            status, answer, elapsed = wire.post("/v1/queries", body)
            if status != 200 or answer.get("cached"):
                raise SystemExit(f"unexpected answer {status}: {answer}")
            return elapsed

        rng = random.Random(args.seed)
        for i in range(args.warmup):
            ask(THRESHOLDS[i % len(THRESHOLDS)])
        load_before = os.getloadavg()
        by_level: dict[float, list[float]] = {x: [] for x in THRESHOLDS}
        started = time.perf_counter()
        for _ in range(args.samples):
            order = list(THRESHOLDS)
            rng.shuffle(order)
            for x in order:
                by_level[x].append(ask(x))
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        wire.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    result: dict[str, Any] = {
        "settings": PHASES[phase],
        "load_average_1_5_15": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
        "wall_s": round(wall, 1),
        "levels": {f"{x:g}": _distribution(by_level[x]) for x in THRESHOLDS},
        "tests": _tests(by_level),
    }
    medians = " / ".join(f"{result['levels'][f'{x:g}']['median_ms']:.0f}" for x in THRESHOLDS)
    tests = result["tests"]
    print(
        f"{phase}: medians {medians} ms for X = 1e4 / 1e5 / 1e6 / 5e6; "
        f"Kruskal-Wallis p = {tests['kruskal_wallis']['p']:.3g}, "
        f"Mann-Whitney (1e4 vs 5e6) p = {tests['mann_whitney_extremes']['p']:.3g}; "
        f"load {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    return {"counter": counter, **result}


def selectivity(rows: int) -> dict[str, float]:
    """The share of the join's rows each threshold keeps (exact, from the generator's files:
    the benchmark's own knowledge, never the server's)."""
    import duckdb

    from sandbox.demo import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        files = synthetic.write_parquet(Path(tmp), rows)
        con = duckdb.connect()
        out = {}
        total = con.execute(
            "SELECT count(*) FROM read_parquet(?) t JOIN read_parquet(?) s USING (credit_code)",
            [str(files["tax"]), str(files["social_insurance"])],
        ).fetchone()
        assert total is not None
        for x in THRESHOLDS:
            kept = con.execute(
                "SELECT count(*) FROM read_parquet(?) t JOIN read_parquet(?) s "
                "USING (credit_code) WHERE revenue >= ?",
                [str(files["tax"]), str(files["social_insurance"]), x],
            ).fetchone()
            assert kept is not None
            out[f"{x:g}"] = round(kept[0] / total[0], 4)
        con.close()
    return out


ENGINE_SHAPES = {
    "attack count (join)": ATTACK,
    "grouped join, group cap window": (
        "SELECT year(t.month) AS y, count(*), sum(amount) FROM tax t "
        "JOIN social_insurance s USING (credit_code) WHERE revenue >= {x} GROUP BY y"
    ),
    "median on one table": "SELECT arrears, median(tax_paid) FROM tax WHERE revenue >= {x} "
    "GROUP BY arrears",
}


def engine(rows: int, repeat: int) -> dict[str, Any]:
    """CPU and wall time of the generated SQL, current and pruning forms, per threshold."""
    import duckdb

    from policies.gate import check, parse, plan
    from policies.loader import load_policy
    from sandbox.demo import synthetic

    policy = load_policy(ROOT / "sandbox" / "demo" / "data" / "enterprise.toml")
    caps = frozenset(t.name for t in policy.tables)  # the demo tables keep their caps
    con = duckdb.connect()
    con.execute("SET threads = 2")
    with tempfile.TemporaryDirectory() as tmp:
        files = synthetic.write_parquet(Path(tmp), rows)
        for name, path in files.items():
            con.execute(
                f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet(?) ORDER BY credit_code',
                [str(path)],
            )
    out: dict[str, Any] = {}
    for shape, sql in ENGINE_SHAPES.items():
        out[shape] = {}
        for form in ("current", "pruning"):
            out[shape][form] = {}
            for x in THRESHOLDS:
                checked = check(parse(sql.format(x=x)), policy)
                planned = plan(
                    checked, policy, salt=1, within_row_caps=caps, pruning=form != "current"
                )
                statements = [planned.sql, *(q.histogram_sql for q in planned.quantiles)]
                cpu, wall = [], []
                for _ in range(repeat + 1):  # the first is a warm-up
                    c, w = time.process_time(), time.perf_counter()
                    for statement in statements:
                        con.execute(statement, list(planned.params)).fetchall()
                    cpu.append(time.process_time() - c)
                    wall.append(time.perf_counter() - w)
                out[shape][form][f"{x:g}"] = {
                    "cpu_median_ms": round(statistics.median(cpu[1:]) * 1000, 1),
                    "wall_median_ms": round(statistics.median(wall[1:]) * 1000, 1),
                }
            row = " / ".join(f"{v['cpu_median_ms']:.0f}" for v in out[shape][form].values())
            print(f"engine: {shape}, {form}: CPU {row} ms for X = 1e4 / 1e5 / 1e6 / 5e6")
    con.close()
    return {"threads": 2, "repeat": repeat, "load_average_1": round(os.getloadavg()[0], 2),
            "shapes": ENGINE_SHAPES, "results": out}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=360_000)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--epsilon", type=float, default=0.0003)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--phases", nargs="*", default=["grid", "nogrid"], choices=sorted(PHASES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/timing_channel.json")
    parser.add_argument("--keep", action="store_true", help="Keep the data directory.")
    parser.add_argument("--engine", action="store_true", help="Add in-process engine timings.")
    parser.add_argument("--engine-repeat", type=int, default=3)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="veil-bench-timing-"))
    try:
        t0 = time.perf_counter()
        keys = build(data_dir, args.rows)
        print(f"demo zone: {args.rows:,} tax rows ({time.perf_counter() - t0:.0f} s)")
        shares = selectivity(args.rows)
        phases: dict[str, Any] = {}
        counter = 0
        for phase in args.phases:
            result = run_phase(phase, data_dir, keys, args, counter)
            counter = result.pop("counter")
            phases[phase] = result
        cost = None
        if "grid" in phases and "nogrid" in phases:
            grid = statistics.median(
                v for lvl in phases["grid"]["levels"].values() for v in lvl["samples_ms"]
            )
            plain = statistics.median(
                v for lvl in phases["nogrid"]["levels"].values() for v in lvl["samples_ms"]
            )
            cost = {"grid_median_ms": grid, "nogrid_median_ms": plain, "added_ms": grid - plain}
        result = {
            "benchmark": "timing side channel of DP queries over HTTP (bench/timing_channel.py)",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
            },
            "query": ATTACK,
            "zone": {"tax_rows": args.rows},
            "share_of_join_rows_kept": shares,
            "samples_per_level": args.samples,
            "epsilon_per_query": args.epsilon,
            "target": f"no detectable difference: p > {ALPHA} with {args.samples} samples",
            "phases": phases,
            "latency_cost": cost,
        }
        if args.engine:
            result["engine"] = engine(args.rows, args.engine_repeat)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"data directory kept: {data_dir}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:])
    else:
        main()
