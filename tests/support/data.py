"""The files under ``tests/data/``: policies that several tests (or long ones) use."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def data_path(name: str) -> Path:
    """The path of ``tests/data/<name>``, whatever the working directory."""
    return DATA / name


def data_text(name: str) -> str:
    """The text of ``tests/data/<name>``."""
    return data_path(name).read_text(encoding="utf-8")
