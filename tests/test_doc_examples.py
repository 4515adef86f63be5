"""Every shell example of README.md and docs/*.md, run against one live demo server.

An example is a fenced block tagged ``sh``, ``bash`` or ``shell``. The examples of one page run in
order in one bash session, as a reader would run them in one terminal (variables and functions
carry over from block to block), with:

* the working directory holding ``veil-data``, the data directory of the demo server (the
  README's ``make demo`` makes one of that name), so ``veil-data/demo-keys.json`` and
  ``--data-dir veil-data`` work as written;
* ``http://127.0.0.1:8000``, the demo's documented address, replaced by the live server's, and
  ``DIR`` (the placeholder of a data directory in the command synopses) by ``veil-data``;
* this project's ``veil`` and ``python3`` first on the ``PATH``.

Every ``curl`` call is recorded (status and body). Unless the comment just before a block says
otherwise, every call of the block must answer 2xx and every command of the block must succeed.
An HTML comment on the line before a block changes that:

* ``<!-- expect: 409 idempotency_key_reused -->``: the block's last HTTP call answers that status
  with that problem ``code`` (the code may be left out), and the calls before it succeed; or a
  comma-separated list with one entry per call of the block, in order (``200, 200, 409 conflict``;
  ``2xx`` for any success);
* ``<!-- example: skip (reason) -->``: the block is not run (it starts a server, runs for minutes,
  needs PostgreSQL or object storage …). Skipped examples are counted: :data:`SKIPPED_EXAMPLES`
  must change with them, so that none stops running unnoticed.

One server for the module: its tests share an xdist group (`make test` runs with
`--dist loadgroup`), so they run on one worker. The module takes well under a minute on an idle
2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from sandbox.config import Settings
from tests.support.app import serving

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = frozenset({"sh", "bash", "shell"})
DEMO_ADDRESS = "http://127.0.0.1:8000"
DATA_DIR_PLACEHOLDER = re.compile(r"(?<![\w/.-])DIR\b")
MARKER = re.compile(r"<!--\s*(expect|example)\s*:\s*(.*?)\s*-->", re.DOTALL)
SKIP = re.compile(r"skip\s*\((.+)\)", re.DOTALL)
EXPECTATION = re.compile(r"(2xx|[1-5]\d\d)(?:\s+([a-z][a-z0-9_]*))?")
PAGE_TIMEOUT_S = 240

# The examples marked ``<!-- example: skip (…) -->`` in README.md and docs/*.md. Change this
# number with the markers: an example that stops running must be a decision, not an accident.
SKIPPED_EXAMPLES = 8

pytestmark = pytest.mark.xdist_group("doc_examples")


@dataclass(frozen=True)
class Expected:
    status: int | None  # None: any 2xx
    code: str | None = None

    def met_by(self, status: int, code: str | None) -> bool:
        if self.status is None:
            return 200 <= status < 300
        return status == self.status and (self.code is None or self.code == code)

    def __str__(self) -> str:
        shown = "2xx" if self.status is None else str(self.status)
        return f"{shown} {self.code}" if self.code else shown


SUCCESS = Expected(None)


@dataclass(frozen=True)
class Example:
    page: str  # relative to the repository
    line: int  # the fence's line, 1-based
    code: str
    skip: str | None = None
    expect: tuple[Expected, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


# -- finding the examples --------------------------------------------------------------------------


def _marker(token: Token | None) -> tuple[str, str] | None:
    if token is None or token.type != "html_block":
        return None
    found = MARKER.search(token.content)
    return (found.group(1), found.group(2)) if found else None


def _expectations(text: str, where: str) -> tuple[Expected, ...]:
    found = []
    for part in text.split(","):
        match = EXPECTATION.fullmatch(part.strip())
        assert match, f"{where}: cannot read the expectation {part.strip()!r}"
        status = None if match.group(1) == "2xx" else int(match.group(1))
        found.append(Expected(status, match.group(2)))
    return tuple(found)


def examples(page: Path) -> Iterator[Example]:
    """The shell examples of ``page`` in order, with their markers; a marker that stands before
    anything but a shell example is an error."""
    relative = page.relative_to(ROOT).as_posix()
    tokens = MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8"))
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i > 0 else None
        marker = _marker(before)
        assert not (token.type == "fence" and token.info.split(" ")[0] == "http"), (
            f"{relative}:{token.map[0] + 1 if token.map else '?'}: write an HTTP example as a "
            "curl command in a sh block, so that it runs"
        )
        if token.type != "fence" or token.info.split(" ")[0] not in SHELL:
            if token.type == "fence":
                for line in token.content.splitlines():
                    assert not line.lstrip("$ ").startswith("curl "), (
                        f"{relative}:{token.map[0] + 1 if token.map else '?'}: a curl example "
                        "in a block not tagged sh: tag it, so that it runs"
                    )
            if token.type == "html_block" and _marker(token):
                following = tokens[i + 1] if i + 1 < len(tokens) else None
                assert following is not None and following.type == "fence", (
                    f"{relative}:{token.map[0] + 1 if token.map else '?'}: a marker must stand "
                    "just before the example it is about"
                )
            continue
        where = f"{relative}:{token.map[0] + 1 if token.map else '?'}"
        skip, expect = None, ()
        if marker is not None:
            kind, text = marker
            if kind == "example":
                skipped = SKIP.fullmatch(text)
                assert skipped, f"{where}: write <!-- example: skip (the reason) -->"
                skip = skipped.group(1).strip()
            else:
                expect = _expectations(text, where)
        line = token.map[0] + 1 if token.map else 0
        yield Example(relative, line, token.content, skip, expect)


ALL = {page.relative_to(ROOT).as_posix(): list(examples(page)) for page in PAGES}


def test_skipped_examples_are_marked_and_counted() -> None:
    skipped = [e for found in ALL.values() for e in found if e.skip is not None]
    listing = "\n".join(f"  {e.where}: {e.skip}" for e in skipped)
    assert len(skipped) == SKIPPED_EXAMPLES, (
        f"{len(skipped)} examples are skipped, SKIPPED_EXAMPLES says {SKIPPED_EXAMPLES}:\n"
        f"{listing}\nMake the new ones run, or change the number on purpose."
    )
    assert sum(1 for found in ALL.values() for e in found if e.skip is None) >= 10


def test_markers_are_read() -> None:
    """The marker syntax, on a page made up for it."""
    page = ROOT / "tests" / "data" / "doc-examples.md"
    found = list(examples(page))
    assert [(e.skip, e.expect) for e in found] == [
        (None, ()),
        ("needs PostgreSQL", ()),
        (None, (Expected(403, "no_grant"),)),
        (None, (SUCCESS, Expected(200), Expected(409, None))),
    ]


# -- running them ----------------------------------------------------------------------------------

PREAMBLE = r"""
set -o pipefail
set -E
trap 'printf "%s\t%s\t%s\n" "$VEIL_DOC_BLOCK" "$?" "$BASH_COMMAND" >> "$VEIL_DOC_LOG/errors"' ERR
curl() {
  local call="$VEIL_DOC_LOG/call-$VEIL_DOC_BLOCK-$EPOCHREALTIME-$BASHPID"
  command curl -D "$call.headers" "$@" | tee "$call.body"
}
"""


@dataclass(frozen=True)
class Call:
    status: int
    code: str | None
    body: str


@dataclass(frozen=True)
class Outcome:
    status: int  # the block's exit status
    errors: list[str]  # the commands that failed
    calls: list[Call]
    stdout: str
    stderr: str


def _prepared(example: Example, url: str) -> str:
    code = example.code.replace(DEMO_ADDRESS, url)
    return DATA_DIR_PLACEHOLDER.sub("veil-data", code)


def _script(found: list[Example], url: str, log: Path) -> str:
    parts = [f"VEIL_DOC_LOG={log}", PREAMBLE]
    for index, example in enumerate(found):
        parts.append(
            f"VEIL_DOC_BLOCK={index}\n{{\n{_prepared(example, url)}\n}}"
            f' > "$VEIL_DOC_LOG/{index}.out" 2> "$VEIL_DOC_LOG/{index}.err"\n'
            f'printf "%s\\n" "$?" > "$VEIL_DOC_LOG/{index}.status"\n'
        )
    return "\n".join(parts)


def _call(headers: Path) -> Call:
    lines = headers.read_text(errors="replace").splitlines() if headers.exists() else []
    statuses = [line.split()[1] for line in lines if line.startswith("HTTP/") and " " in line]
    status = int(statuses[-1]) if statuses else 0  # 0: no answer at all
    body = headers.with_suffix(".body").read_text(errors="replace")
    code = None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("code"), str):
        code = document["code"]
    return Call(status, code, body)


def _calls(log: Path, index: int) -> list[Call]:
    found = []
    for headers in log.glob(f"call-{index}-*.headers"):
        started = float(headers.name.split("-")[2])
        found.append((started, _call(headers)))
    return [call for _, call in sorted(found, key=lambda pair: pair[0])]


def run_page(found: list[Example], url: str, work: Path) -> list[Outcome]:
    log = work / f"log-{os.getpid()}-{len(list(work.glob('log-*')))}"
    log.mkdir()
    for example in found:
        checked = subprocess.run(
            ["bash", "-n"], input=_prepared(example, url), capture_output=True, text=True
        )
        assert checked.returncode == 0, f"{example.where}: not valid bash:\n{checked.stderr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    script = work / "page.sh"
    script.write_text(_script(found, url, log), encoding="utf-8")
    subprocess.run(
        ["bash", "--noprofile", "--norc", str(script)],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=PAGE_TIMEOUT_S,
        check=False,
    )
    errors: dict[int, list[str]] = {}
    if (log / "errors").exists():
        for line in (log / "errors").read_text().splitlines():
            block, status, command = line.split("\t", 2)
            errors.setdefault(int(block), []).append(f"exit {status}: {command}")
    outcomes = []
    for index in range(len(found)):
        status_file = log / f"{index}.status"
        outcomes.append(
            Outcome(
                int(status_file.read_text()) if status_file.exists() else -1,
                errors.get(index, []),
                _calls(log, index),
                (log / f"{index}.out").read_text(errors="replace"),
                (log / f"{index}.err").read_text(errors="replace"),
            )
        )
    return outcomes


def problems(example: Example, outcome: Outcome) -> list[str]:
    """What went wrong with one example: nothing, if it did what its page says."""
    found = []
    if outcome.status != 0:
        found.append(f"the block exited with status {outcome.status}")
    found += [f"a command failed ({error})" for error in outcome.errors]
    calls = outcome.calls
    if example.expect and not calls:
        found.append(f"no HTTP call, where the page expects {example.expect[-1]}")
    if len(example.expect) > 1:
        if len(example.expect) != len(calls):
            found.append(f"{len(calls)} HTTP calls, {len(example.expect)} expectations")
        wanted = list(example.expect)
    else:
        wanted = [SUCCESS] * (len(calls) - 1) + [example.expect[0] if example.expect else SUCCESS]
    for n, (call, expected) in enumerate(zip(calls, wanted, strict=False), start=1):
        if not expected.met_by(call.status, call.code):
            got = f"{call.status} {call.code or ''}".strip()
            found.append(f"call {n}: expected {expected}, got {got}: {call.body[:300]}")
    return found


@pytest.fixture(scope="module")
def doc_server(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The demo server the examples talk to, and the working directory they run in (holding
    its data directory as ``veil-data``)."""
    missing = [tool for tool in ("bash", "curl") if shutil.which(tool) is None]
    assert not missing, f"the examples of the docs need {', '.join(missing)} on the PATH"
    work = tmp_path_factory.mktemp("doc-examples")
    data_dir = work / "veil-data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=30)
    with serving(settings) as url:
        yield url, work


@pytest.mark.parametrize("page", list(ALL))
def test_examples_of_the_page_do_what_it_says(page: str, request: pytest.FixtureRequest) -> None:
    found = [e for e in ALL[page] if e.skip is None]
    if not found:
        return
    url, work = request.getfixturevalue("doc_server")
    outcomes = run_page(found, url, work)
    failed = []
    for example, outcome in zip(found, outcomes, strict=True):
        wrong = problems(example, outcome)
        if wrong:
            failed.append(
                f"{example.where}:\n  " + "\n  ".join(wrong) + f"\n  stdout: "
                f"{outcome.stdout[-1500:]}\n  stderr: {outcome.stderr[-1500:]}"
            )
    assert not failed, "examples that do not do what their page says:\n" + "\n".join(failed)


def test_a_wrong_example_is_caught(request: pytest.FixtureRequest) -> None:
    """The checks themselves: a call that answers otherwise than its page says, a command that
    fails, a block that exits non-zero — each is reported."""
    url, work = request.getfixturevalue("doc_server")
    wrong = [
        Example("made-up.md", 1, "curl -s http://127.0.0.1:8000/v1/budgets\n"),
        Example("made-up.md", 2, "curl -s http://127.0.0.1:8000/healthz\n", None, (Expected(404),)),
        Example("made-up.md", 3, "false\necho after\n"),
        Example("made-up.md", 4, "(exit 3)\n"),
        Example("made-up.md", 5, "curl -s http://127.0.0.1:8000/healthz\n"),
        Example("made-up.md", 6, "echo no call\n", None, (Expected(409, "conflict"),)),
    ]
    found = [problems(e, o) for e, o in zip(wrong, run_page(wrong, url, work), strict=True)]
    assert "expected 2xx, got 401 unauthorized" in found[0][0]
    assert "expected 404, got 200" in found[1][0]
    assert found[2] == ["a command failed (exit 1: false)"]
    assert found[3] == ["the block exited with status 3", "a command failed (exit 3: ( exit 3 ))"]
    assert found[4] == []
    assert found[5] == ["no HTTP call, where the page expects 409 conflict"]


def _json_blocks(page: str) -> list[object]:
    tokens = MarkdownIt("commonmark").parse((ROOT / page).read_text(encoding="utf-8"))
    found: list[object] = []
    for token in tokens:
        if token.type == "fence" and token.info.strip() == "json":
            try:
                found.append(json.loads(token.content))
            except ValueError:
                continue  # an excerpt ("…"), not a whole document
    return found


def test_the_budget_in_the_docs_has_the_fields_of_the_api() -> None:
    """queries.md shows a query's answer and ``GET /v1/budgets`` with exactly the fields their
    response models have (it once showed ``epsilon_total``, ``epsilon_spent``, …)."""
    from sandbox.api.responses.queries import Answer, Budget

    blocks = [b for b in _json_blocks("docs/queries.md") if isinstance(b, dict)]
    answer = next(b for b in blocks if "query_id" in b)
    listing = next(b for b in blocks if "budgets" in b)
    optional = {"member_budget", "spent_as_epsilon", "total_as_epsilon"}
    assert set(answer) == set(Answer.model_fields)
    assert set(answer["budget"]) | optional == set(Budget.model_fields)
    for budget in listing["budgets"]:
        assert set(budget) | optional | {"queries_left_at_this_cost"} == set(Budget.model_fields)
