"""The documentation works as written: every code block of README.md and docs/*.md marked
`<!-- runnable -->` runs (Python blocks in the fast suite, shell blocks in the slow one, with
EVOLVER_MAX_GENERATIONS keeping runs short), and every relative link points at a file, and a
heading, that exists.

A page's blocks run in order in one scratch folder (Python blocks in one namespace); a block marked
`<!-- file: NAME -->` is written there as NAME first. What a page's blocks name as a run's output
(`--out DIR`, `out="DIR"`) must exist afterwards.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT
from neurons.models import MODELS

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = re.compile(r"<!-- (runnable|file: (\S+)) -->\n```(\w+)\n(.*?)```", re.S)
OUTPUTS = re.compile(r"""--out\s+(\S+)|\bout=["']([^"']+)["']""")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MAX_GENERATIONS = "3"


@dataclass
class Block:
    page: Path
    language: str
    text: str
    file: str | None  # the name a `file:` block is written as; None for a runnable block

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}: {self.language} block {self.text.splitlines()[0][:60]!r}"


def blocks(page: Path) -> list[Block]:
    return [Block(page, language, text, name or None)
            for _, name, language, text in MARKED.findall(page.read_text())]


def pages_with(language: str) -> list[Path]:
    return [p for p in PAGES if any(b.language == language and b.file is None for b in blocks(p))]


def write_files(page: Path, folder: Path) -> None:
    for block in blocks(page):
        if block.file:
            (folder / block.file).write_text(block.text)


def assert_outputs_exist(runnable: list[Block], folder: Path) -> None:
    for block in runnable:
        for flag, keyword in OUTPUTS.findall(block.text):
            assert (folder / (flag or keyword)).exists(), f"{block} names {flag or keyword}, which it did not write"


def test_the_documentation_has_runnable_blocks_of_both_kinds():
    marked = [b for page in PAGES for b in blocks(page)]
    assert {b.language for b in marked if b.file is None} == {"bash", "python"}
    assert len(pages_with("bash")) >= 4 and pages_with("python")
    assert all(b.language in ("bash", "python") for b in marked if b.file is None), "runnable: bash or python"


@pytest.mark.parametrize("page", pages_with("python"), ids=lambda p: p.name)
def test_python_blocks_run(page, tmp, monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # a page's register_model stays in the test
    monkeypatch.setenv("EVOLVER_MAX_GENERATIONS", MAX_GENERATIONS)
    monkeypatch.chdir(tmp)
    write_files(page, tmp)
    runnable = [b for b in blocks(page) if b.language == "python" and b.file is None]
    namespace: dict = {}
    for block in runnable:
        exec(compile(block.text, str(block), "exec"), namespace)
    assert_outputs_exist(runnable, tmp)


@pytest.mark.slow
@pytest.mark.docs
@pytest.mark.parametrize("page", pages_with("bash"), ids=lambda p: p.name)
def test_shell_blocks_run(page, tmp):
    write_files(page, tmp)
    runnable = [b for b in blocks(page) if b.language == "bash" and b.file is None]
    env = {**os.environ, "EVOLVER_MAX_GENERATIONS": MAX_GENERATIONS, "HF_HUB_OFFLINE": "1"}
    for i, block in enumerate(runnable):
        # Its own session, so that what a block leaves in the background (a rig) is stopped with it;
        # its output to files, which a background process holding them open does not block.
        with open(tmp / f".block{i}.out", "w") as out, open(tmp / f".block{i}.err", "w") as err:
            process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.text], cwd=tmp, env=env,
                                       stdout=out, stderr=err, start_new_session=True)
            try:
                process.wait(timeout=300)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        errors = (tmp / f".block{i}.err").read_text()[-3000:]
        assert process.returncode == 0, f"{block} exited {process.returncode}:\n{errors}"
    assert_outputs_exist(runnable, tmp)


def headings(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_what_exists(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in headings(file), f"{page.name} links to {target}: {file.name} has no such heading"
