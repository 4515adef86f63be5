"""The command line, run in-process through Typer's runner."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from sandbox.cli import app


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
