"""The README's Python lines run as written: the five-line example (with a smaller search
budget) and every call of the "More:" line after it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# what "ghnas.meta_train(...)" stands for: the smallest run that exercises it
TINY_META_TRAIN = ("tmp_path / 'meta', space='nb201', data='sample', steps=1, meta_batch=2, batch_size=8, "
                   "hid=8, max_shape=(8, 8, 3, 3), build_kwargs={'C': 4, 'N': 1}, eval_every=0, eval_archs=2, "
                   "eval_images=16, eval_batch=8, device='cpu', amp=False, progress=False")


def _section() -> str:
    return README.read_text().split("## Five lines", 1)[1].split("\n## ", 1)[0]


def five_lines() -> str:
    match = re.search(r"```python\n(.*?)```", _section(), re.S)
    assert match, "the README's 'Five lines' section has no python block"
    return match.group(1)


def more_calls() -> list[str]:
    """The inline code spans of the paragraph that starts with "More:"."""
    text = _section().split("```", 2)[2]  # after the python block
    para = text.split("More:", 1)[1].split("\n\n", 1)[0]
    return [" ".join(c.split()) for c in re.findall(r"`([^`]+)`", para)]


@pytest.fixture(scope="module")
def five_line_scope(tmp_path_factory):
    import os

    code = five_lines()
    assert "budget=100" in code
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("readme"))  # the search writes its run folder here
    try:
        scope: dict = {}
        exec(compile(code.replace("budget=100", "budget=6"), "README.md", "exec"), scope)
    finally:
        os.chdir(old)
    return scope


@pytest.mark.filterwarnings("ignore")
def test_five_line_example_runs(five_line_scope, capsys):
    net, model = five_line_scope["net"], five_line_scope["model"]
    assert sum(p.numel() for p in net.parameters()) > 20_000_000  # ResNet-50, predicted
    assert model is not None


@pytest.mark.filterwarnings("ignore")
def test_more_line_calls_run(five_line_scope, tmp_path):
    import torch

    import search_spaces

    calls = more_calls()
    assert len(calls) >= 4, calls
    scope = dict(five_line_scope)
    scope.update(search_spaces=search_spaces, tmp_path=tmp_path,
                 archs=search_spaces.get("nb201").sample_many(3, seed=0, unique=True))
    results = {}
    for call in calls:
        code = call.replace("(...)", f"({TINY_META_TRAIN})")
        results[call] = eval(compile(code, "README.md", "eval"), scope)
    by_name = {c.rsplit("(", 1)[0]: v for c, v in results.items()}
    assert isinstance(by_name['search_spaces.get("darts").sample'], str)
    table = by_name["ghnas.proxies.score"]
    assert len(table.rows) == 3 and table.degenerate is None
    assert isinstance(by_name["ghnas.warm_start"], torch.nn.Module)
    assert by_name["ghnas.meta_train"].step == 1
