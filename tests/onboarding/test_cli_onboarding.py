"""``veil`` onboarding commands: issues on a data directory, and loads, issues and the rest
against a running server (``--url`` / ``--key``), with an Idempotency-Key."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from connectors.base import Progress
from sandbox.audit.store import read_entries
from sandbox.cli.loads import _follow
from sandbox.cli.main import app
from sandbox.client import Client
from sandbox.config import Settings
from sandbox.store import db
from tests.support.onboarding import HEADER, POLICY, ROWS, ZONE, write_csv

SUBJECT = "91110108MA01ABCD2X"


def veil(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout if code == 0 else result.stderr


def test_issues_on_a_data_directory(data_dir: Path, tmp_path: Path) -> None:
    dd = ["--data-dir", str(data_dir)]
    policy = tmp_path / "firms.toml"
    policy.write_text(POLICY, encoding="utf-8")
    source = data_dir / "sources" / write_csv(data_dir, "firms.csv", ROWS)
    common = ["--zone", ZONE, "--dataset", "firms", "--policy", str(policy)]
    veil("load", *common, str(source), *dd)

    raised = json.loads(
        veil("issue", "raise", "firms", "--title", "A2 wrong", "--subject", SUBJECT, *dd)
    )
    assert (raised["number"], raised["state"], raised["about_subject"]) == (1, "open", True)
    assert SUBJECT not in json.dumps(raised)
    listed = json.loads(veil("issue", "list", "firms", *dd))
    assert [i["number"] for i in listed] == [1]
    answered = json.loads(veil("issue", "answer", "firms", "1", "--answer", "checking", *dd))
    assert (answered["state"], answered["answer"]["text"]) == ("answered", "checking")
    resolved = json.loads(
        veil("issue", "resolve", "firms", "1", "--kind", "no_change", "--note", "ok", *dd)
    )
    assert resolved["resolution"]["kind"] == "no_change"
    assert json.loads(veil("issue", "show", "firms", "1", *dd))["state"] == "resolved"
    again = veil("issue", "resolve", "firms", "1", "--kind", "no_change", *dd, code=1)
    assert "error: conflict:" in again
    missing = veil("issue", "show", "firms", "9", *dd, code=1)
    assert "error: not_found:" in missing
    refused = CliRunner().invoke(
        app, ["issue", "answer", "firms", "1", "--answer", "x", "--idempotency-key", "k", *dd]
    )
    assert refused.exit_code == 2  # an Idempotency-Key means something only with --url
    # the local administrator's changes are recorded as its own, load outcome included
    engine = db.connect(Settings(data_dir=data_dir).state_url)
    try:
        with engine.connect() as con:
            entries = [e.entry for e in read_entries(con, limit=100_000, kind="onboarding")]
    finally:
        engine.dispose()
    mine = [e for e in entries if e["refs"].get("dataset") == "firms"]
    assert [e["action"] for e in mine] == [
        "load.begin", "load.ready", "issue.raise", "issue.answer", "issue.resolve",
    ]  # fmt: skip
    assert {e["actor"]["type"] for e in mine} == {"local"}


def test_load_and_issues_against_a_server(
    live: str, keys: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    admin = ["--url", live, "--key", keys["admin"]]
    policy = tmp_path / "firms.toml"
    policy.write_text(POLICY, encoding="utf-8")
    common = ["--zone", ZONE, "--dataset", "firms", "--policy", str(policy)]
    # the source is a path on the server, under its sources/ folder
    loaded = json.loads(veil("load", *common, write_csv(data_dir, "firms.csv", ROWS), *admin))
    assert (loaded["state"], loaded["version"], loaded["rows_loaded"]) == ("ready", 1, 4)
    assert loaded["quality"]["status"] == "passed"

    bad = write_csv(data_dir, "bad.csv", [ROWS[0], "A2,西城,12a,2020-01-31"])
    failed = veil("load", *common, "--table", f"firms={bad}", *admin, code=1)
    assert ": failed (no version made)" in failed and "error: type_conversion:" in failed
    outside = veil("load", *common, str(tmp_path / "x.csv"), *admin, code=1)
    assert "error: invalid_source:" in outside  # nothing outside sources/ over HTTP

    versions = json.loads(veil("versions", "--zone", ZONE, "firms", *admin))
    assert [(v["version"], v["state"]) for v in versions["versions"]] == [
        (1, "ready"),
        (None, "failed"),  # a failed load released the number it held
    ]
    report = json.loads(veil("quality", "firms", *admin))
    assert report["version"] == 1 and report["report"]["tables"][0]["rows"] == 4
    assert veil("quality", "firms", "--html", *admin).lstrip().startswith("<!")

    verifier = ["--url", live, "--key", keys["verifier"]]
    raised_text = veil(
        "issue", "raise", "firms", "--title", "A2 wrong", "--subject", SUBJECT,
        "--idempotency-key", "issue-1", *verifier,
    )  # fmt: skip
    again = veil(
        "issue", "raise", "firms", "--title", "A2 wrong", "--subject", SUBJECT,
        "--idempotency-key", "issue-1", *verifier,
    )  # fmt: skip
    assert json.loads(again) == json.loads(raised_text)  # replayed, not a second issue
    reused = veil(
        "issue", "raise", "firms", "--title", "other", "--idempotency-key", "issue-1", *verifier,
        code=1,
    )  # fmt: skip
    assert "error: idempotency_key_reused:" in reused
    assert [i["number"] for i in json.loads(veil("issue", "list", "firms", *admin))] == [1]
    answered = json.loads(veil("issue", "answer", "firms", "1", "--answer", "checking", *admin))
    assert answered["state"] == "answered"
    refused = veil("issue", "answer", "firms", "1", "--answer", "no", *verifier, code=1)
    assert "error: forbidden:" in refused
    resolved = json.loads(
        veil("issue", "resolve", "firms", "1", "--kind", "no_change", "--note", "as filed", *admin)
    )
    assert resolved["state"] == "resolved"
    assert json.loads(veil("issue", "show", "firms", "1", *verifier))["state"] == "resolved"


def test_load_progress_is_fed_by_polling(live: str, keys: dict[str, str], data_dir: Path) -> None:
    client = Client(live, keys["admin"])
    try:
        started = client.start_load(
            ZONE, "firms", {"policy": POLICY, "source": write_csv(data_dir, "firms.csv", ROWS)}
        )
        seen: list[Progress] = []
        view = _follow(client, ZONE, "firms", str(started["load"]), seen.append)
    finally:
        client.close()
    assert view["state"] == "ready"
    assert seen and seen[-1].table == "firms" and seen[-1].rows == 4
    assert seen[-1].bytes_read == seen[-1].bytes_total


def test_zones_and_providers_against_a_server(live: str, keys: dict[str, str]) -> None:
    admin = ["--url", live, "--key", keys["admin"]]
    zone = ["--id", "haidian", "--kind", "regional", "--operator", "o", "--title", "t"]
    made = json.loads(veil("zone", "create", *zone, "--idempotency-key", "z1", *admin))
    assert made["id"] == "haidian"
    assert json.loads(veil("zone", "create", *zone, "--idempotency-key", "z1", *admin)) == made
    assert "haidian" in [z["id"] for z in json.loads(veil("zone", "list", *admin))]
    veil("provider", "create", "--id", "bj-tax", "--name", "Tax", "--zone", "haidian", *admin)
    assert [p["id"] for p in json.loads(veil("provider", "list", *admin))] == ["bj-tax"]
    no_key = veil("zone", "list", "--url", live, code=2)
    assert "--key" in no_key


def test_load_uploads_a_local_file_in_chunks(
    live: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """``veil load --url … --upload FILE`` sends a file the server does not have, then loads it."""
    admin = ["--url", live, "--key", keys["admin"]]
    policy = tmp_path / "firms.toml"
    policy.write_text(POLICY, encoding="utf-8")
    local = tmp_path / "firms.csv"
    local.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    common = ["--zone", ZONE, "--dataset", "firms", "--policy", str(policy)]
    loaded = json.loads(veil("load", *common, str(local), "--upload", *admin))
    assert (loaded["state"], loaded["version"], loaded["rows_loaded"]) == ("ready", 1, 4)
    assert "uploads/" in loaded["source"]
    # chunked: a chunk size smaller than the file
    client = Client(live, keys["admin"])
    try:
        view = client.upload(ZONE, "firms", local, chunk_bytes=16)
    finally:
        client.close()
    assert view["state"] == "complete" and view["received"] == local.stat().st_size
    assert veil("load", *common, str(local), "--upload", code=2)  # needs --url
