"""The GHNs shipped in ghnas/assets load by name, match their recorded size, and are trained."""
from __future__ import annotations

import json

import pytest

import search_spaces
from ghnas.ghn import available_ghns, load_ghn
from ghnas.ghn.hub import asset_dir
from ghnas.proxies import score
from ghnas.proxies.ghn import GHNProxy
from ghnas.search import PROXY_BUILD_KWARGS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_shipped_ghn_predicts_better_than_chance(space):
    name = f"ghnas-{space}-cifar10"
    assert name in available_ghns()
    meta = json.loads((asset_dir() / f"{name}.json").read_text())
    assert meta["space"] == space and meta["build_kwargs"] == PROXY_BUILD_KWARGS[space]
    ghn = load_ghn(name)
    archs = search_spaces.get(space).sample_many(4, seed=123, unique=True)
    # 200 images of the shipped sample; chance is 10% and random initialisation gets about that
    table = score(archs, space, GHNProxy(ghn=ghn, metric="acc"), data="sample", batch_size=200,
                  build_kwargs=meta["build_kwargs"], progress=False)
    mean = sum(table.scores) / len(table.scores)
    assert mean > 0.17, table.scores
