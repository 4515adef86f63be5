"""A small zone for onboarding tests: its name, the ``firms`` policy, and CSV sources written
where loads over HTTP may read them (``<data_dir>/sources``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.support.app import auth
from tests.support.data import data_text

ZONE = "beijing-finance"
POLICY = data_text("firms.toml")
HEADER = "credit_code,district,revenue,founded"
ROWS = [
    "A1,东城,10.5,2010-05-01",
    "A2,西城,20,2020-01-31",
    "A3,东城,,2015-03-01",
    "A4,西城,99,2001-12-31",
]


def sources(data_dir: Path) -> Path:
    path = data_dir / "sources"
    path.mkdir(exist_ok=True)
    return path


def write_csv(data_dir: Path, name: str, rows: list[str], encoding: str = "utf-8") -> str:
    (sources(data_dir) / name).write_text("\n".join([HEADER, *rows]) + "\n", encoding=encoding)
    return name


def load(client: TestClient, key: str, source: str, policy: str = POLICY, **extra: Any) -> dict:
    body = {"policy": policy, "source": source, **extra}
    started = client.post(f"/v1/zones/{ZONE}/datasets/firms/versions", json=body, headers=auth(key))
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == started.json()["url"]
    return wait(client, key, started.json()["url"])


def wait(client: TestClient, key: str, url: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = client.get(url, headers=auth(key)).json()
        if view["state"] != "loading":
            return dict(view)
        time.sleep(0.05)
    raise AssertionError(f"{url} still loading")


def current_version(client: TestClient, key: str) -> int:
    response = client.get("/v1/datasets/firms", headers=auth(key))
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def workspace_files(data_dir: Path) -> list[str]:
    folder = data_dir / "workspaces" / "firms"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
