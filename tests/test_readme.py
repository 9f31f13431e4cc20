"""The README's Python code blocks run as written (in order, in one namespace, in a scratch folder)."""
import re

from conftest import ROOT
from neurons.models import MODELS


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_python_blocks_run(tmp, monkeypatch, capsys):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # its register_model, for this test alone
    blocks = python_blocks()
    assert len(blocks) >= 2 and any("from_module" in b for b in blocks)
    monkeypatch.chdir(tmp)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    first_best, best, path = printed.splitlines()[0].split()
    assert float(best) >= float(first_best) and path == "runs/my-unit"
    for run in ("my-unit", "red", "mynet"):
        assert (tmp / "runs" / run / "generations.csv").is_file()
    assert len((tmp / "runs" / "my-unit" / "generations.csv").read_text().splitlines()) > 1
