"""The command line, run in-process through Typer's runner."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from sandbox.cli.main import app


def test_demo_data_writes_parquet_of_the_requested_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo-data", "--rows", "5000", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    tax = pq.read_metadata(tmp_path / "tax.parquet").num_rows
    assert 5000 <= tax < 5036
    for table in ("registry", "social_insurance", "utilities"):
        assert (tmp_path / f"{table}.parquet").exists()


def test_demo_data_refuses_a_bad_row_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo-data", "--rows", "0", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "rows" in result.output.lower()


def test_tenant_member_grant_and_ledger_on_a_data_directory(demo_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(demo_dir, data_dir)
    runner = CliRunner()

    def veil(*args: str) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        return result.output

    tenant = json.loads(
        veil(
            "tenant", "create", "--name", "Bank", "--kind", "bank", "--purpose-class", "commercial"
        )
    )
    member = json.loads(
        veil("member", "create", "--tenant", tenant["id"], "--name", "ana", "--role", "analyst")
    )
    assert member["api_key"].startswith("veil_")
    grant = json.loads(
        veil(
            "grant", "create", "--tenant", tenant["id"], "--dataset", "cps1988",
            "--epsilon", "2", "--per-query-cap", "0.5", "--delta", "1e-6",
        )
    )  # fmt: skip
    assert grant["total"] == 2.0 and grant["per_query_cap"] == 0.5
    sub = json.loads(
        veil(
            "grant", "sub-budget", "--tenant", tenant["id"], "--grant", grant["id"],
            "--member", member["id"], "--budget", "1",
        )
    )  # fmt: skip
    assert sub["total"] == 1.0
    csv_text = veil("ledger", "--csv", "--tenant", tenant["id"])
    assert csv_text.splitlines()[0].startswith("time,entry,id,tenant")
    assert "credit:grant" in csv_text
    bad = runner.invoke(
        app,
        ["grant", "create", "--tenant", tenant["id"], "--dataset", "nope", "--epsilon", "1",
         "--per-query-cap", "1", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert bad.exit_code == 1
    assert "not_found" in bad.output
