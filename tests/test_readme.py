"""The README's five-line example runs as written (with a smaller search budget)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def five_lines() -> str:
    text = README.read_text()
    section = text.split("## Five lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's 'Five lines' section has no python block"
    return match.group(1)


@pytest.mark.filterwarnings("ignore")
def test_five_line_example_runs(tmp_path, monkeypatch, capsys):
    code = five_lines()
    assert "budget=100" in code
    monkeypatch.chdir(tmp_path)  # the search writes its run folder here
    scope: dict = {}
    exec(compile(code.replace("budget=100", "budget=6"), "README.md", "exec"), scope)
    net, model = scope["net"], scope["model"]
    assert sum(p.numel() for p in net.parameters()) > 20_000_000  # ResNet-50, predicted
    assert model is not None and "rank" in capsys.readouterr().out
