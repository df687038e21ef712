"""Ray Tune integration: the searcher (best-first proposals, sampled hyperparameters,
save/restore), the stopper, warm starts for trainables, distributed proxy scoring (equal
to the single-process path) and the example.

Tests that start Ray are marked ``ray``; all but one are also ``slow``. The quick one
runs a real ``Tuner`` with the searcher and the stopper on trivial trials.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
pytest.importorskip("ray.tune")

import ray  # noqa: E402
from ray import tune  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.integrations import ProxyScorer  # noqa: E402
from ghnas.integrations.ray_tune import (GHNSearcher, ProxyStopper, score_distributed,  # noqa: E402
                                         warm_start)
from ghnas.proxies import score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = {"C": 4, "N": 1}
SPACE = search_spaces.get("nb201")




@pytest.fixture(scope="module")
def ray_local():
    """A local Ray runtime with two CPUs, started once for the module."""
    # trainables defined here travel by value: the workers cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def params_scores(archs):
    return score(archs, SPACE, "params", data=None, build_kwargs=TINY, progress=False).scores


def ranking(archs):
    values = params_scores(archs)
    order = sorted(range(len(archs)), key=lambda i: (-values[i], i))
    return [SPACE.validate(archs[i]) for i in order], [values[i] for i in order]


# --------------------------------------------------------------------------- no runtime needed


def test_missing_ray_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package looks like
    monkeypatch.delitem(sys.modules, "ghnas.integrations.ray_tune")
    with pytest.raises(ImportError, match=r'pip install "ghnas\[ray\]"'):
        importlib.import_module("ghnas.integrations.ray_tune")
    monkeypatch.undo()
    importlib.import_module("ghnas.integrations.ray_tune")


def test_searcher_proposes_best_first_with_sampled_params_and_finishes():
    pool = SPACE.sample_many(5, seed=3, unique=True)
    order, values = ranking(pool)
    s = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, sample_seed=1,
                    metric="acc", mode="max")
    space = {"lr": tune.loguniform(1e-3, 0.1), "opt": {"wd": tune.choice([0.0, 5e-4])}, "epochs": 2}
    assert s.set_search_properties(None, None, space)
    configs = [s.suggest(f"t{i}") for i in range(5)]
    assert [c["arch"] for c in configs] == order
    assert [c["proxy_score"] for c in configs] == values
    assert all(1e-3 <= c["lr"] <= 0.1 and c["opt"]["wd"] in (0.0, 5e-4) and c["epochs"] == 2
               for c in configs)
    assert len({c["lr"] for c in configs}) == 5
    assert s.suggest("t5") == GHNSearcher.FINISHED
    s.on_trial_complete("t0", {"acc": 0.5})
    s.on_trial_complete("t1", None, error=True)
    assert s.results[order[0]] == {"trial_id": "t0", "error": False, "metric": 0.5}
    assert s.results[order[1]]["error"] is True
    # the same seeds give the same suggestions
    again = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, sample_seed=1)
    again.set_search_properties(None, None, space)
    assert again.suggest("x") == configs[0]


def test_searcher_save_restore_continues_without_rescoring(tmp_path):
    pool = SPACE.sample_many(6, seed=4, unique=True)
    order, _ = ranking(pool)
    space = {"lr": tune.uniform(0.01, 0.1)}
    s = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, arch_key="model/arch",
                    score_key=None)
    s.set_search_properties("acc", "max", space)
    first = [s.suggest(f"t{i}") for i in range(3)]
    assert [c["model"]["arch"] for c in first] == order[:3] and "proxy_score" not in first[0]
    s.on_trial_complete("t0", {"acc": 0.3})
    path = tmp_path / "searcher-state.pkl"
    s.save(str(path))
    json.loads(path.read_text())  # plain JSON: restoring runs no code
    rest = [s.suggest(f"t{i}") for i in range(3, 6)]

    fresh = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, arch_key="model/arch",
                        score_key=None)
    fresh.set_search_properties("acc", "max", space)
    fresh.restore(str(path))
    assert len(fresh.scorer.scored) == 0  # the ranking came from the state, not from scoring
    assert [fresh.suggest(f"t{i}") for i in range(3, 6)] == rest
    fresh.on_trial_complete("t1", {"acc": 0.7})  # a trial that was running at save time
    assert fresh.results[order[1]]["metric"] == 0.7 and fresh.results[order[0]]["metric"] == 0.3
    # restore_from_dir (what Tuner.restore calls) finds the file by Tune's name pattern
    other = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, arch_key="model/arch")
    other.save_to_dir(str(tmp_path), "x")
    other2 = GHNSearcher(SPACE, pool=pool, proxy="params", build_kwargs=TINY, arch_key="model/arch")
    other2.restore_from_dir(str(tmp_path))


def test_searcher_accepts_a_scored_table_and_rejects_bad_input():
    pool = SPACE.sample_many(4, seed=5, unique=True)
    table = score(pool + pool[:1], SPACE, "params", data=None, build_kwargs=TINY, progress=False)
    s = GHNSearcher(SPACE, pool=table, proxy="params", build_kwargs=TINY)
    assert [a for a, _ in s.ranked()] == ranking(pool)[0]  # duplicates dropped
    assert len(s.scorer.scored) == 0
    with pytest.raises(ValueError, match="grid_search"):
        s.set_search_properties(None, None, {"lr": tune.grid_search([0.1, 0.01])})
    with pytest.raises(TypeError, match="pool size"):
        GHNSearcher(SPACE, pool="abc", proxy="params")
    with pytest.raises(ValueError, match="pool size"):
        GHNSearcher(SPACE, pool=0, proxy="params")


def test_stopper_stops_low_ranked_architectures_at_their_first_result():
    reference = SPACE.sample_many(10, seed=6, unique=True)
    archs = SPACE.sample_many(8, seed=7, unique=True)
    threshold = float(np.quantile(params_scores(reference), 0.5))
    expected = [v < threshold for v in params_scores(archs)]
    assert 0 < sum(expected) < len(expected)
    stopper = ProxyStopper(SPACE, "params", quantile=0.5, reference=reference, build_kwargs=TINY)
    got = [stopper(f"t{i}", {"config": {"arch": a}, "step": 0}) for i, a in enumerate(archs)]
    assert got == expected
    assert stopper.stopped == [f"t{i}" for i, e in enumerate(expected) if e]
    # judged once: later results never stop a trial
    assert not any(stopper(f"t{i}", {"config": {"arch": a}, "step": 1}) for i, a in enumerate(archs))
    assert stopper.stop_all() is False
    with pytest.raises(ValueError, match="arch_key"):
        stopper("new", {"config": {"net": archs[0]}})


def test_stopper_against_earlier_trials():
    archs = SPACE.sample_many(8, seed=8, unique=True)
    values = params_scores(archs)
    scorer = ProxyScorer(SPACE, "params", build_kwargs=TINY)
    stopper = ProxyStopper(scorer=scorer, quantile=0.5, n_startup_trials=3, arch_key="net/arch")
    got = [stopper(f"t{i}", {"config": {"net": {"arch": a}}}) for i, a in enumerate(archs)]
    assert got == [i >= 3 and v < float(np.quantile(values[:i], 0.5)) for i, v in enumerate(values)]


def _aggregate(archs):
    from ghnas.proxies import rank_aggregate

    cols = [score(archs, SPACE, m, data=None, build_kwargs=TINY, progress=False).scores for m in ("params", "flops")]
    return rank_aggregate(cols, [True, True])


def test_searcher_and_stopper_rank_an_aggregate_over_the_set_seen():
    pool = SPACE.sample_many(8, seed=31, unique=True)
    s = GHNSearcher(SPACE, pool=pool, proxy="params+flops", build_kwargs=TINY)
    agg = _aggregate(pool)
    order = sorted(range(8), key=lambda i: (-agg[i], i))
    assert s.ranked() == [(SPACE.validate(pool[i]), pytest.approx(agg[i])) for i in order]
    assert s.suggest("t0")["proxy_score"] == pytest.approx(agg[order[0]])
    # the stopper: each trial ranked among the reference and the trials judged before it
    reference, archs = pool[:6], SPACE.sample_many(4, seed=32, unique=True)
    stopper = ProxyStopper(SPACE, "params+flops", quantile=0.5, reference=reference, build_kwargs=TINY)
    got = [stopper(f"t{i}", {"config": {"arch": a}}) for i, a in enumerate(archs)]
    expected = []
    for i in range(len(archs)):
        now = _aggregate(reference + archs[: i + 1])
        expected.append(now[-1] < float(np.quantile(now[:len(reference)], 0.5)))
    assert got == expected and 0 < sum(expected) < len(expected)
    assert len(stopper.scorer.scored) == 10


def test_warm_start_loads_the_ghn_once_per_process(random_ghn):
    import ghnas.integrations as gi
    from ghnas.ghn import load_ghn
    from ghnas.warm import warm_start as plain

    arch = SPACE.sample(9)
    torch.manual_seed(0)
    a = warm_start(SPACE.build(arch, **TINY), random_ghn)
    torch.manual_seed(0)
    b = plain(SPACE.build(arch, **TINY), load_ghn(random_ghn))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.training
    cached = gi.resolve_ghn(random_ghn)
    assert gi.resolve_ghn(str(random_ghn)) is cached


# --------------------------------------------------------------------------- with a Ray runtime


def _report_twice(config):
    tune.report({"step": 0, "acc": 0.0})
    tune.report({"step": 1, "acc": config["proxy_score"] * config["lr"]})


@pytest.mark.ray
def test_tuner_with_searcher_and_stopper(ray_local, tmp_path):
    pool = SPACE.sample_many(4, seed=10, unique=True)
    order, values = ranking(pool)
    scorer = ProxyScorer(SPACE, "params", build_kwargs=TINY)
    searcher = GHNSearcher(scorer=scorer, pool=pool)
    # the pool's median splits it in two: the third proposal is stopped at step 0
    stopper = ProxyStopper(scorer=scorer, quantile=0.5, reference=pool)
    tuner = tune.Tuner(_report_twice, param_space={"lr": tune.uniform(0.1, 1.0)},
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=3, metric="acc",
                                                   mode="max"),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="quick", stop=stopper,
                                                 verbose=0))
    results = tuner.fit()
    assert not results.errors
    by_arch = {r.config["arch"]: r for r in results}
    assert sorted(by_arch) == sorted(order[:3])  # the best three, none of the rest
    for rank, (arch, value) in enumerate(zip(order[:3], values)):
        r = by_arch[arch]
        assert r.config["proxy_score"] == value and 0.1 <= r.config["lr"] <= 1.0
        assert r.metrics["step"] == (1 if rank < 2 else 0), rank  # stopped before "training"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("proxy", ["params", "synflow", "synflow+params", "ghn"])
def test_score_distributed_equals_single_process(ray_local, proxy, random_ghn):
    from ghnas.proxies.ghn import GHNProxy

    archs = SPACE.sample_many(10, seed=11) + SPACE.sample_many(2, seed=11)  # with duplicates
    kw = dict(build_kwargs={"C": 8, "N": 1} if proxy == "ghn" else TINY, progress=False, device="cpu",
              batch_size=32)
    p = GHNProxy(ghn=str(random_ghn), chunk=4, eval_batch=32) if proxy == "ghn" else proxy
    single = score(archs, SPACE, p, "sample", **kw)
    dist = score_distributed(archs, SPACE, p, "sample", num_workers=2, chunk_size=3, **kw)
    assert dist.archs == single.archs
    assert dist.scores == single.scores  # bit-identical
    assert dist.settings == single.settings and dist.proxy == single.proxy
    assert [r.cached for r in dist.rows] == [r.cached for r in single.rows]
    assert dist.members == single.members


@pytest.mark.ray
@pytest.mark.slow
def test_score_distributed_shares_the_cache(ray_local, tmp_path):
    archs = SPACE.sample_many(6, seed=12)
    cache = tmp_path / "scores.jsonl"
    first = score_distributed(archs, SPACE, "synflow", build_kwargs=TINY, progress=False, cache=cache,
                              device="cpu", num_workers=2)
    again = score(archs, SPACE, "synflow", build_kwargs=TINY, progress=False, cache=cache, device="cpu")
    assert again.scores == first.scores and all(r.cached for r in again.rows)
    assert len(cache.read_text().splitlines()) == len(set(archs))


def _crash_once(config):
    done = Path(config["flag"])
    if config["arch"] == config["crash_on"] and not done.exists():
        done.write_text("crashed once")
        raise RuntimeError("simulated crash")
    tune.report({"acc": config["proxy_score"]})


@pytest.mark.ray
@pytest.mark.slow
def test_tuner_restore_resumes_the_search(ray_local, tmp_path):
    pool = SPACE.sample_many(5, seed=13, unique=True)
    order, _ = ranking(pool)
    space = {"flag": str(tmp_path / "crashed"), "crash_on": order[2]}
    tuner = tune.Tuner(_crash_once, param_space=space,
                       tune_config=tune.TuneConfig(search_alg=GHNSearcher(SPACE, pool=pool, proxy="params",
                                                                          build_kwargs=TINY),
                                                   num_samples=5, metric="acc", mode="max",
                                                   max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0,
                                                 failure_config=tune.FailureConfig(fail_fast="raise")))
    with pytest.raises(Exception, match="simulated crash"):  # the driver stops mid-search
        tuner.fit()
    path = str(tmp_path / "exp")
    assert tune.Tuner.can_restore(path)
    results = tune.Tuner.restore(path, trainable=_crash_once, restart_errored=True).fit()
    assert not results.errors
    # every pool member exactly once: the restored searcher went on from its saved position
    assert sorted(r.config["arch"] for r in results) == sorted(order)


@pytest.mark.ray
@pytest.mark.slow
def test_example_runs_shortened(ray_local, tmp_path, random_ghn):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import ray_tune_search
    finally:
        sys.path.pop(0)
    ray.cloudpickle.register_pickle_by_value(ray_tune_search)
    common = ["--ghn", str(random_ghn), "--pool", "4", "--trials", "3", "--steps", "1",
              "--train-images", "32", "--val-images", "32", "--batch-size", "16", "--proxy-images", "16",
              "--storage-path", str(tmp_path)]
    summary = ray_tune_search.main(common + ["--score-workers", "2", "--name", "ghn",
                                             "--out", str(tmp_path / "ghn.json")])
    assert summary["n_trials"] == 3 and not any(r["error"] for r in summary["trials"])
    scores = sorted((r["proxy_score"] for r in summary["trials"]), reverse=True)
    ranked = GHNSearcher(SPACE, pool=4, ghn=random_ghn, build_kwargs={"C": 8, "N": 1}, batch_size=16,
                         device="cpu").ranked()
    assert scores == pytest.approx([s for _, s in ranked[:3]], rel=1e-6)
    summary = ray_tune_search.main(common + ["--searcher", "random", "--name", "random"])
    assert summary["n_trials"] == 3
