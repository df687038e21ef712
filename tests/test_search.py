"""ghnas.search (package ghnas.searching): strategies, budget semantics, determinism, resume,
training the top k, GHN proxies, degenerate results, run folders."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import ghnas
import search_spaces
from ghnas.ghn import GHN2, save_ghn
from ghnas.proxies.ghn import GHNProxy
from ghnas.searching import (PROXY_BUILD_KWARGS, SearchResult, ghn_build_kwargs, proxy_build_kwargs,
                          run_strategy, search)
from search_spaces import SearchSpace

TINY = {"C": 4, "N": 1}
# a random GHN with a small decoder has never "seen" the tiny networks' shapes; expected here
pytestmark = pytest.mark.filterwarnings("ignore:the GHN's shape encoding has no entry")




@pytest.fixture(scope="module")
def ghn():
    torch.manual_seed(0)
    return GHN2(hid=16, max_shape=(16, 16, 3, 3)).eval()


@pytest.fixture
def ghn_path(ghn, tmp_path):
    return save_ghn(ghn, tmp_path / "ghn.pt")


def tiny_search(ghn, **kw):
    args = dict(space="nb201", budget=6, ghn=ghn, build_kwargs=TINY, batch_size=32, progress=False,
                device="cpu")
    args.update(kw)
    return search(**args)


def check_result(r: SearchResult, budget: int) -> None:
    sp = search_spaces.get(r.space)
    assert len(r.table) == budget
    assert len({sp.hash(c.arch) for c in r.table}) == budget  # distinct architectures
    assert sorted(c.order for c in r.table) == list(range(budget))
    scores = [c.score for c in r.table]
    assert r.best_score == max(scores) and r.best_arch == r.table[0].arch
    assert scores == sorted(scores, reverse=True)
    assert len(r.history) == budget and r.history[-1] == r.best_score
    assert all(a <= b for a, b in zip(r.history, r.history[1:]))
    by_order = [c.score for c in r.by_order()]
    assert r.history == [max(by_order[:i + 1]) for i in range(budget)]


@pytest.mark.parametrize("strategy,kw", [("random", {}), ("evolution", {"population": 3, "sample_size": 2}),
                                         ("tpe", {"n_startup_trials": 3})])
def test_each_strategy_scores_exactly_budget_distinct_archs(ghn, strategy, kw):
    r = tiny_search(ghn, strategy=strategy, **kw)
    check_result(r, 6)
    assert r.strategy == strategy and r.proxy == "ghn"
    assert r.settings["build_kwargs"] == TINY and r.settings["ghn_saved"] is False
    assert "in-memory" in r.settings["ghn"]
    assert all(-20.0 < c.score < 0.0 for c in r.table)  # minus the cross-entropy (GHN proxy default)


def test_search_is_deterministic_by_seed(ghn):
    a = tiny_search(ghn, strategy="evolution", population=3, sample_size=2, seed=3)
    b = tiny_search(ghn, strategy="evolution", population=3, sample_size=2, seed=3)
    assert [(c.arch, c.score) for c in a.by_order()] == [(c.arch, c.score) for c in b.by_order()]
    c = tiny_search(ghn, strategy="evolution", population=3, sample_size=2, seed=4)
    assert [x.arch for x in a.by_order()] != [x.arch for x in c.by_order()]


@pytest.mark.parametrize("strategy", ["random", "evolution", "tpe"])
def test_strategies_deterministic_with_a_fast_proxy(strategy):
    runs = [search("nb201", budget=12, proxy="params", strategy=strategy, seed=1, progress=False,
                   device="cpu", build_kwargs=TINY) for _ in range(2)]
    assert [c.arch for c in runs[0].by_order()] == [c.arch for c in runs[1].by_order()]
    check_result(runs[0], 12)


def test_evolution_improves_on_its_population():
    # a score the strategy can climb: number of convolutions in the cell
    sp = search_spaces.get("nb201")
    log = run_strategy("evolution", sp, 60, lambda archs: [float(a.count("conv")) for a in archs],
                       seed=0, population=10, sample_size=5)
    assert len({sp.hash(a) for a, _ in log}) == 60
    first, later = max(s for _, s in log[:10]), max(s for _, s in log)
    assert later >= first and later >= 5


def test_resume_from_out_dir_does_not_rescore(ghn, tmp_path, monkeypatch):
    calls = []
    real = GHNProxy._evaluate

    def counting(self, *a, **k):
        calls.append(1)
        if stop_after[0] is not None and len(calls) > stop_after[0]:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    stop_after = [4]
    monkeypatch.setattr(GHNProxy, "_evaluate", counting)
    with pytest.raises(KeyboardInterrupt):  # a crash while scoring the third pair
        tiny_search(ghn, out_dir=tmp_path, chunk=2)
    assert not (tmp_path / "result.json").exists()
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 4
    calls.clear()
    stop_after[0] = None
    r = tiny_search(ghn, out_dir=tmp_path, chunk=2)
    assert len(calls) == 2  # only the two missing ones
    assert sum(c.cached for c in r.table) == 4
    calls.clear()
    r2 = tiny_search(ghn, out_dir=tmp_path, chunk=2)
    assert calls == []
    assert [(c.arch, c.score) for c in r2.table] == [(c.arch, c.score) for c in r.table]
    fresh = tiny_search(ghn, chunk=2)
    assert [(c.arch, c.score) for c in fresh.table] == [(c.arch, c.score) for c in r.table]


def test_result_json_round_trip_and_plot(ghn, tmp_path):
    r = tiny_search(ghn, out_dir=tmp_path, strategy="tpe")
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = SearchResult.read_json(tmp_path / "result.json")
    assert back.to_dict() == r.to_dict()
    assert back == r
    text = r.to_json()
    assert json.loads(text)["best_arch"] == r.best_arch
    p = r.plot(tmp_path / "again.png")
    assert p.stat().st_size > 1000
    assert "rank" in r.summary(3) and r.best_arch in r.summary(3)


def test_degenerate_scores_serialise(tmp_path):
    r = search("nb201", budget=3, proxy="params", progress=False, device="cpu", build_kwargs=TINY)
    r.table[-1].score = -math.inf
    r.history[0] = -math.inf
    r.to_json(tmp_path / "r.json")
    back = SearchResult.read_json(tmp_path / "r.json")
    assert back.table[-1].score == -math.inf
    r.plot(tmp_path / "r.png")


def test_train_top_k_reports_val_accuracy(ghn):
    from ghnas.data import ImageData

    g = torch.Generator().manual_seed(0)
    train = ImageData(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g),
                      torch.arange(64) % 10, [str(i) for i in range(10)])
    val = ImageData(torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.arange(40) % 10, [str(i) for i in range(10)])
    r = tiny_search(ghn, budget=4, train_top_k=2, train_data=(train, val),
                    train_kwargs={"steps": 2, "batch_size": 16})
    trained = [c for c in r.table if c.val_accuracy is not None]
    assert [c.arch for c in trained] == [c.arch for c in r.table[:2]]
    for c in trained:
        assert 0.0 <= c.val_accuracy <= 1.0 and c.train_seconds > 0 and math.isfinite(c.val_loss)
    assert r.best_trained in trained
    assert "val_acc" in r.summary()
    assert r.settings["train_kwargs"] == {"steps": 2, "batch_size": 16}


def test_train_top_k_refuses_the_test_sample(ghn):
    with pytest.raises(ValueError, match="sample"):
        tiny_search(ghn, budget=2, train_top_k=1)


def test_build_with_ghn_parameters(ghn):
    from ghnas.graph import extract

    r = tiny_search(ghn, budget=3)
    model = r.build()
    assert model.training and all(p.requires_grad for p in model.parameters())
    pred = ghn.predict([extract(search_spaces.get("nb201").build(r.best_arch, **TINY))])[0]
    params = dict(model.named_parameters())
    for k, v in pred.items():
        torch.testing.assert_close(params[k].detach(), v)
    bigger = r.build(C=8)
    assert bigger.stem[0].weight.shape[0] == 8
    plain = r.build(pretrained=False)
    assert not torch.equal(dict(plain.named_parameters())["stem.0.weight"], params["stem.0.weight"])


def test_build_after_reload_uses_the_ghn_path(ghn_path, tmp_path):
    r = tiny_search(str(ghn_path), budget=2, out_dir=tmp_path)
    back = SearchResult.read_json(tmp_path / "result.json")
    assert back.settings["ghn"] == str(ghn_path)
    a = dict(r.build().named_parameters())
    b = dict(back.build().named_parameters())
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_build_without_ghn_is_plain_model():
    r = search("nb201", budget=2, proxy="params", progress=False, device="cpu", build_kwargs=TINY)
    m = r.build()
    assert isinstance(m, torch.nn.Module)
    assert sum(p.numel() for p in m.parameters()) > 0


def test_build_kwargs_defaults_and_ghn_sidecar(ghn_path, tmp_path):
    assert PROXY_BUILD_KWARGS["nb201"] == {"C": 8, "N": 1}
    assert PROXY_BUILD_KWARGS["darts"] == {"C": 8, "layers": 5}
    assert proxy_build_kwargs("nb201") == {"C": 8, "N": 1}
    assert ghn_build_kwargs(ghn_path) is None
    ghn_path.with_suffix(".json").write_text(json.dumps({"build_kwargs": {"C": 4, "N": 1}}))
    assert ghn_build_kwargs(ghn_path) == {"C": 4, "N": 1}
    r = search("nb201", budget=2, ghn=str(ghn_path), batch_size=16, progress=False, device="cpu")
    assert r.settings["build_kwargs"] == {"C": 4, "N": 1}
    # a meta-training run folder records its sizes in config.json
    run = tmp_path / "run"
    run.mkdir()
    p = save_ghn(GHN2(hid=8, max_shape=(8, 8, 3, 3)), run / "ghn.pt")
    (run / "config.json").write_text(json.dumps({"space": "nb201", "build_kwargs": {"C": 6, "N": 1}}))
    assert ghn_build_kwargs(p, "nb201") == {"C": 6, "N": 1}
    assert ghn_build_kwargs(p, "darts") is None
    assert proxy_build_kwargs("darts", p) == {"C": 8, "layers": 5}


def test_the_ghn_proxy_alone_ranks_darts_at_its_chosen_size(ghn_path):
    from ghnas.integrations import ProxyScorer
    from ghnas.proxies.ghn import SPACE_SIZES
    from ghnas.searching import prepare_proxy

    darts = search_spaces.get("darts")
    chosen = SPACE_SIZES["darts"]
    assert chosen != PROXY_BUILD_KWARGS["darts"]
    assert prepare_proxy(darts, "ghn").build_kwargs == chosen
    assert ProxyScorer("darts", "ghn").build_kwargs == chosen  # integrations decide alike
    # an aggregate scores every member at one size: the one its GHN member was chosen with
    for name in ("zero-shot", "ghn+params", "vote:ghn,synflow"):
        assert prepare_proxy(darts, name).build_kwargs == PROXY_BUILD_KWARGS["darts"], name
        assert ProxyScorer("darts", name).build_kwargs == PROXY_BUILD_KWARGS["darts"], name
    # other GHN proxies, another GHN, another space, and a size the caller gives
    assert prepare_proxy(darts, "ghn_finetune").build_kwargs == PROXY_BUILD_KWARGS["darts"]
    assert prepare_proxy(darts, "ghn", ghn=str(ghn_path)).build_kwargs == PROXY_BUILD_KWARGS["darts"]
    assert prepare_proxy(search_spaces.get("nb201"), "ghn").build_kwargs == PROXY_BUILD_KWARGS["nb201"]
    assert prepare_proxy(darts, "ghn", build_kwargs={"C": 8, "layers": 5}).build_kwargs == {"C": 8, "layers": 5}
    assert ProxyScorer("darts", "ghn", build_kwargs={"C": 4, "layers": 5}).build_kwargs == {"C": 4, "layers": 5}


def test_ghnas_search_is_the_function_and_searching_the_package(ghn):
    import ghnas.searching as pkg

    assert ghnas.search is pkg.search and callable(ghnas.search)
    assert not hasattr(pkg, "_CallableModule")
    r = ghnas.search("nb201", budget=2, proxy="params", progress=False, device="cpu", build_kwargs=TINY)
    assert isinstance(r, SearchResult)


def test_darts_search_with_default_proxy_sizes():
    r = search("darts", budget=3, proxy="params", strategy="evolution", population=2, progress=False,
               device="cpu")
    check_result(r, 3)
    assert r.settings["build_kwargs"] == {"C": 8, "layers": 5}


def test_pool_restricts_the_search():
    sp = search_spaces.get("nb201")
    base = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    # single-edit neighbours, some spelled as equivalent cells (a dead edge changed), so
    # evolution finds pool members through mutation under another spelling
    pool = [base] + sp.neighbours(base)[:12] + sp.sample_many(6, seed=5, unique=True)
    pool.append("|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|")
    pool.append("|nor_conv_1x1~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|")  # same as the one above
    members = {sp.validate(a) for a in pool}
    distinct = len({sp.hash(a) for a in pool})
    for strategy in ("random", "evolution"):
        opts = {"population": 4, "sample_size": 2} if strategy == "evolution" else {}
        log = run_strategy(strategy, sp, distinct, lambda archs: [float(len(a)) for a in archs], seed=0,
                           pool=pool, **opts)
        assert len(log) == distinct and all(a in members for a, _ in log)  # the pool's own strings
        assert len({sp.hash(a) for a, _ in log}) == distinct
    with pytest.raises(ValueError, match="exceeds"):
        run_strategy("random", sp, distinct + 1, lambda archs: [0.0] * len(archs), pool=pool)
    with pytest.raises(ValueError, match="pool"):
        run_strategy("tpe", sp, 3, lambda archs: [0.0] * len(archs), pool=pool)


class TinySpace(SearchSpace):
    """Four architectures 'a0b0' .. 'a1b1': TPE runs into duplicates quickly."""

    name = "tiny-test"

    def parse(self, arch):
        if arch not in ("a0b0", "a0b1", "a1b0", "a1b1"):
            from search_spaces import InvalidArchitecture

            raise InvalidArchitecture(f"bad {arch!r}")
        return (int(arch[1]), int(arch[3]))

    def format(self, obj):
        return f"a{obj[0]}b{obj[1]}"

    def sample(self, rng=None):
        g = search_spaces.as_rng(rng)
        return self.format(tuple(int(v) for v in g.integers(2, size=2)))

    def neighbours(self, arch):
        a, b = self.parse(arch)
        return [self.format((1 - a, b)), self.format((a, 1 - b))]

    def canonical(self, arch):
        return self.validate(arch)

    @property
    def encoding_choices(self):
        return [2, 2]

    def encode(self, arch):
        return np.array(self.parse(arch), dtype=np.int64)

    def decode(self, vec):
        return self.format(tuple(self._check_vector(vec).tolist()))

    def build(self, arch, **kw):  # pragma: no cover - not needed here
        raise NotImplementedError


@pytest.mark.parametrize("strategy", ["random", "evolution", "tpe"])
def test_whole_tiny_space_is_covered_without_duplicates(strategy):
    sp = TinySpace()
    seen = []

    def evaluate(archs):
        seen.extend(archs)
        return [float(int(a[1]) + int(a[3])) for a in archs]

    log = run_strategy(strategy, sp, 4, evaluate, seed=0, **({"max_duplicates": 3} if strategy == "tpe" else {}))
    assert sorted(a for a, _ in log) == ["a0b0", "a0b1", "a1b0", "a1b1"]
    assert sorted(seen) == sorted(a for a, _ in log)  # nothing evaluated twice
    with pytest.raises(ValueError):
        run_strategy(strategy, sp, 5, evaluate, seed=0)


def test_bad_arguments_are_named(ghn):
    with pytest.raises(ValueError, match="unknown search strategy 'annealing'"):
        search("nb201", budget=2, strategy="annealing", proxy="params", progress=False)
    with pytest.raises(ValueError, match="budget"):
        search("nb201", budget=0, proxy="params", progress=False)
    with pytest.raises(ValueError, match="unknown proxy"):
        search("nb201", budget=2, proxy="nope", progress=False)
    with pytest.raises(KeyError, match="unknown search space"):
        search("nb999", budget=2, proxy="params", progress=False)
    with pytest.raises(ValueError, match="only used by GHN proxies"):
        search("nb201", budget=2, proxy="params", ghn=ghn, progress=False)
    with pytest.raises(ValueError, match="unknown option"):
        search("nb201", budget=2, proxy="params", strategy="random", population=3, progress=False)
    with pytest.raises(FileNotFoundError):
        search("nb201", budget=2, ghn="/no/such/ghn.pt", progress=False)


def test_missing_shipped_ghn_is_explained():
    from ghnas.ghn import register_ghn
    from ghnas.ghn import hub

    register_ghn("ghnas-missing-test", asset="no_such_ghn.pt", overwrite=True)
    try:
        with pytest.raises(FileNotFoundError, match="ghnas-missing-test"):
            search("nb201", budget=2, ghn="ghnas-missing-test", progress=False)
    finally:
        hub._REGISTRY.pop("ghnas-missing-test", None)


def test_search_benchmark_simulation():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_search_nb201.py"
    spec = importlib.util.spec_from_file_location("bench_search_nb201", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sp = search_spaces.get("nb201")
    archs = [sp.validate(a) for a in sp.sample_many(30, seed=0, unique=True)]
    truth = {a: float(i) for i, a in enumerate(archs)}
    scores = {"perfect": dict(truth), "inverse": {a: -v for a, v in truth.items()}}
    res = mod.simulate(archs, truth, scores, budget=10, seeds=[0, 1, 2], strategy="random")
    assert res["perfect"]["picks"] == res["best visited"]["picks"]
    assert all(i <= p for i, p in zip(res["inverse"]["picks"], res["random choice"]["picks"]))
    assert res["perfect"]["mean"] >= res["random choice"]["mean"]
    evo = mod.simulate(archs, truth, scores, budget=10, seeds=[0], strategy="evolution")
    assert evo["perfect"]["picks"][0] in truth.values()
