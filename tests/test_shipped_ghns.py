"""The GHNs shipped in ghnas/assets load by name, match their recorded size, and are trained."""
from __future__ import annotations

import json

import pytest

import search_spaces
from ghnas.ghn import available_ghns, load_ghn
from ghnas.ghn.hub import asset_dir
from ghnas.proxies import score
from ghnas.proxies.ghn import GHNProxy
from ghnas.searching import PROXY_BUILD_KWARGS

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


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_shipped_ghns_do_not_warn_about_the_shapes_they_were_trained_on(space, monkeypatch):
    import warnings

    from ghnas.ghn import layers

    monkeypatch.setattr(layers, "_WARNED_SHAPES", set())
    sp = search_spaces.get(space)
    model = sp.build(sp.sample(0), **PROXY_BUILD_KWARGS[space])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_ghn(f"ghnas-{space}-cifar10").predict([model])
    assert not [w for w in rec if "shape encoding has no entry" in str(w.message)]


def test_meta_trained_flag_round_trips_and_fresh_ghns_still_warn(tmp_path, monkeypatch):
    import warnings

    from ghnas.ghn import GHN2, layers, save_ghn

    monkeypatch.setattr(layers, "_WARNED_SHAPES", set())
    ghn = GHN2(hid=8, max_shape=(16, 16, 3, 3))
    model = search_spaces.get("nb201").build(search_spaces.get("nb201").sample(0), C=4, N=1)
    with warnings.catch_warnings(record=True) as rec:  # (4, 3, 3, 3) is not in GHN-2's table
        warnings.simplefilter("always")
        load_ghn(save_ghn(ghn, tmp_path / "fresh.pt") or tmp_path / "fresh.pt").predict([model])
    assert [w for w in rec if "shape encoding has no entry" in str(w.message)]
    ghn.shape_enc.warn_unknown = False
    save_ghn(ghn, tmp_path / "trained.pt")
    assert load_ghn(tmp_path / "trained.pt").shape_enc.warn_unknown is False


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_the_shipped_ranking_ghn_is_the_ghn_proxys_default_and_records_its_choice(space):
    import hashlib

    from ghnas.ghn import default_ghn_name, ghn_entry
    from ghnas.proxies import get_proxy

    name = f"ghnas-{space}-cifar10-rank"
    assert ghn_entry(name).purpose == "rank" and default_ghn_name(space, "rank") == name
    assert default_ghn_name(space) == f"ghnas-{space}-cifar10"  # prediction keeps the accurate GHN
    meta = json.loads((asset_dir() / f"{name}.json").read_text())
    # the sidecar describes this very file: its choice on the tuning half, its reporting figure
    digest = hashlib.sha256((asset_dir() / f"{name}.pt").read_bytes()).hexdigest()[:16]
    assert meta["digest"] == digest and meta["purpose"] == "rank" and meta["build_kwargs"] == PROXY_BUILD_KWARGS[space]
    # the GHN proxy made for the space scores as chosen: the metric and the image count
    assert meta["choice"]["metric"] == GHNProxy().metric_for(space)
    assert meta["choice"]["n"] == get_proxy("ghn", space=space).default_batch_size
    assert set(meta["tune"]) >= {"kendall_mean", "kendall_min"} and set(meta["report"]) >= {"kendall_mean"}
    proxy = GHNProxy()
    proxy.identity(search_spaces.get(space))
    assert proxy.ghn == name
