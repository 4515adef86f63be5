from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.config import Settings
from tests.support.app import serving
from tests.support.demo import demo_keys


@pytest.fixture(scope="module")
def demo_server(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], Path]]:
    """One served demo for the module: its URL, its members' keys, and a working directory
    holding its data directory as ``veil-data``."""
    work = tmp_path_factory.mktemp("client")
    data_dir = work / "veil-data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=30)
    with serving(settings) as url:
        yield url, demo_keys(data_dir), work
