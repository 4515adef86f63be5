"""docs/client.md's session runs as written: its ``python`` blocks, in order, in one namespace,
against one served demo (``http://127.0.0.1:8000`` replaced by its address), from a directory
holding its data directory as ``veil-data``. The blocks' own asserts check what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
DEMO_ADDRESS = "http://127.0.0.1:8000"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    tokens = MarkdownIt("commonmark").parse(page.read_text())
    return [
        (t.map[0] + 1 if t.map else 0, t.content)
        for t in tokens
        if t.type == "fence" and t.info.strip() == "python"
    ]


def test_the_session_of_docs_client_runs_as_written(
    demo_server: tuple[str, dict[str, str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _, work = demo_server
    monkeypatch.chdir(work)
    blocks = python_blocks(DOC)
    assert len(blocks) >= 7, "the session lost its steps"
    namespace: dict[str, object] = {"__name__": "docs_client"}
    for line, code in blocks:
        try:
            exec(compile(code.replace(DEMO_ADDRESS, url), f"{DOC}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/client.md, the block at line {line}: {exc!r}") from exc
    printed = capsys.readouterr().out
    assert "cps1988" in printed and "mean weekly wage in the south" in printed
    assert "400 column_not_groupable" in printed
