"""Optuna integration: architectures as trial parameters, the proxy pruner (exact pruning
decisions with a cheap proxy, and with a real random GHN), the queue callback, SQLite
storage shared by two worker processes, resuming after a crash, and the example."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

optuna = pytest.importorskip("optuna")

import search_spaces  # noqa: E402
from ghnas.integrations import ProxyScorer, is_below, quantile_threshold  # noqa: E402
from ghnas.integrations.optuna import (ARCH_ATTR, KEY_ATTR, SCORE_ATTR, GHNProxyPruner,  # noqa: E402
                                       ProxyQueueCallback, architecture_of, proxy_scores,
                                       suggest_architecture)
from ghnas.proxies import score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = {"C": 4, "N": 1}
SPACE = search_spaces.get("nb201")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # a shared 2-core machine: one intra-op thread per process is much faster here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    torch.set_num_threads(n)


def params_of(arch: str, name: str = "arch") -> dict[str, int]:
    vec = SPACE.encode(arch)
    width = len(str(len(vec) - 1))
    return {f"{name}_{i:0{width}d}": int(v) for i, v in enumerate(vec)}


def params_scores(archs):
    return score(archs, SPACE, "params", data=None, build_kwargs=TINY, progress=False).scores


def run_archs(study, archs, objective):
    for a in archs:
        study.enqueue_trial(params_of(a))
    study.optimize(objective, n_trials=len(archs))


def objective_with_pruning(trial):
    arch = suggest_architecture(trial, SPACE)
    if trial.should_prune():
        raise optuna.TrialPruned()
    return float(len(arch))


# --------------------------------------------------------------------------- suggest


def test_suggest_architecture_params_roundtrip_and_attr():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    arch = suggest_architecture(trial, "nb201")
    assert arch == SPACE.validate(arch)
    assert sorted(trial.params) == [f"arch_{i}" for i in range(6)]
    assert trial.user_attrs[ARCH_ATTR] == arch
    assert SPACE.decode([trial.params[f"arch_{i}"] for i in range(6)]) == arch
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert architecture_of(frozen, SPACE) == arch
    # without the attribute the architecture is decoded from the parameters
    frozen.user_attrs = {}
    assert architecture_of(frozen, SPACE) == arch


def test_suggest_architecture_honours_enqueued_params_and_darts_encoding():
    darts = search_spaces.get("darts")
    arch = darts.sample(5)
    vec = darts.encode(arch)
    width = len(str(len(vec) - 1))
    study = optuna.create_study()
    study.enqueue_trial({f"cell_{i:0{width}d}": int(v) for i, v in enumerate(vec)})
    trial = study.ask()
    assert suggest_architecture(trial, darts, name="cell") == darts.validate(arch)
    assert trial.user_attrs[f"{ARCH_ATTR}:cell"] == darts.validate(arch)
    assert architecture_of(trial, darts, name="cell") == darts.validate(arch)
    assert architecture_of(trial, darts) is None  # no 'arch_*' parameters


# --------------------------------------------------------------------------- pruner


def test_quantile_rule():
    assert quantile_threshold([1, 2, 3, 4], 0.5, True) == 2.5
    assert quantile_threshold([1, 2, 3, 4], 0.25, False) == pytest.approx(3.25)
    assert quantile_threshold([float("-inf"), 1.0, 3.0], 0.5, True) == 2.0  # finite only
    assert quantile_threshold([float("-inf")], 0.5, True) is None
    assert is_below(2.0, 2.5, True) and not is_below(2.5, 2.5, True)
    assert is_below(3.0, 2.5, False) and not is_below(2.0, 2.5, False)
    assert is_below(float("-inf"), 2.5, True) and is_below(float("nan"), 2.5, True)
    assert not is_below(float("-inf"), None, True)
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold([1.0], 1.5, True)


def test_pruner_with_reference_pool_prunes_exactly_the_low_ranked():
    reference = SPACE.sample_many(12, seed=1, unique=True)
    trials = SPACE.sample_many(10, seed=2, unique=True)
    ref_scores, trial_scores = params_scores(reference), params_scores(trials)
    threshold = float(np.quantile(ref_scores, 0.5))
    expected = [s < threshold for s in trial_scores]
    assert 0 < sum(expected) < len(expected)  # the check is not vacuous

    pruner = GHNProxyPruner(SPACE, "params", quantile=0.5, reference=reference, build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    run_archs(study, trials, objective_with_pruning)
    got = [t.state == optuna.trial.TrialState.PRUNED for t in study.trials]
    assert got == expected
    assert [t.user_attrs[SCORE_ATTR] for t in study.trials] == trial_scores
    assert len({t.user_attrs[KEY_ATTR] for t in study.trials}) == 1
    assert pruner.threshold(study) == threshold
    # the reference scores are stored on the study, for other workers and resumed runs
    stored = study.user_attrs["ghnas_proxy_reference"]
    assert stored["archs"] == reference and stored["scores"] == ref_scores


def test_pruner_against_earlier_trials_waits_for_startup_trials():
    trials = SPACE.sample_many(9, seed=4, unique=True)
    values = params_scores(trials)
    expected = []
    for i, v in enumerate(values):
        expected.append(i >= 3 and v < float(np.quantile(values[:i], 0.5)))
    assert any(expected)

    pruner = GHNProxyPruner(SPACE, "params", quantile=0.5, n_startup_trials=3, build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    run_archs(study, trials, objective_with_pruning)
    assert [t.state == optuna.trial.TrialState.PRUNED for t in study.trials] == expected
    assert proxy_scores(study) == dict(enumerate(values))
    assert proxy_scores(study, key="other-settings") == {}


def test_pruner_lower_is_better_direction():
    # a proxy where lower is better flips which side is pruned
    from ghnas.proxies.size import Params

    class Smaller(Params):
        higher_is_better = False

    trials = SPACE.sample_many(6, seed=9, unique=True)
    reference = SPACE.sample_many(8, seed=10, unique=True)
    ref = params_scores(reference)
    pruner = GHNProxyPruner(SPACE, Smaller(), quantile=0.25, reference=reference, build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    run_archs(study, trials, objective_with_pruning)
    threshold = float(np.quantile(ref, 0.75))
    assert [t.state == optuna.trial.TrialState.PRUNED for t in study.trials] == \
        [s > threshold for s in params_scores(trials)]


def test_pruner_hands_over_to_wrapped_pruner_once_training_reports():
    # the cell without any op has the fewest parameters of all: no architecture ranks below it
    smallest = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    pruner = GHNProxyPruner(SPACE, "params", quantile=0.0, reference=[smallest], build_kwargs=TINY,
                            wrapped_pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    suggest_architecture(trial, SPACE)
    assert trial.should_prune() is False
    trial.report(0.1, step=1)
    assert trial.should_prune() is True  # the threshold pruner's answer
    trial.report(0.9, step=2)
    assert GHNProxyPruner(SPACE, "params", build_kwargs=TINY).prune(
        study, study._storage.get_trial(trial._trial_id)) is False  # no wrapped pruner


def test_pruner_errors():
    pruner = GHNProxyPruner(SPACE, "params", build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    trial.suggest_float("lr", 0.01, 0.1)
    with pytest.raises(ValueError, match="suggest_architecture"):
        trial.should_prune()
    with pytest.raises(ValueError, match="quantile"):
        GHNProxyPruner(SPACE, "params", quantile=2)
    with pytest.raises(ValueError, match="only used by GHN proxies"):
        GHNProxyPruner(SPACE, "params", ghn="x.pt")
    with pytest.raises(TypeError, match="pool size"):
        GHNProxyPruner(SPACE, "params", reference="|bad|")
    with pytest.raises(Exception, match="nor_conv_9x9"):
        GHNProxyPruner(SPACE, "params", reference=["|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"])


def test_pruner_with_a_random_ghn(random_ghn):
    from ghnas.proxies.ghn import GHNProxy

    reference = SPACE.sample_many(3, seed=11, unique=True)
    trials = SPACE.sample_many(3, seed=12, unique=True)
    settings = dict(build_kwargs={"C": 8, "N": 1}, batch_size=32)
    expect_ref = score(reference, SPACE, GHNProxy(ghn=str(random_ghn)), "sample", progress=False,
                       device="cpu", **settings).scores
    expect = score(trials, SPACE, GHNProxy(ghn=str(random_ghn)), "sample", progress=False,
                   device="cpu", **settings).scores
    pruner = GHNProxyPruner(SPACE, ghn=random_ghn, quantile=0.5, reference=reference, device="cpu",
                            **settings)
    study = optuna.create_study(pruner=pruner)
    run_archs(study, trials, objective_with_pruning)
    got = [t.user_attrs[SCORE_ATTR] for t in study.trials]
    # one architecture per GHN call here, three in one call above: the batched GNN
    # rounds differently in the last bits
    assert got == pytest.approx(expect, rel=1e-6, abs=1e-9)
    threshold = float(np.quantile(expect_ref, 0.5))
    assert pruner.threshold(study) == threshold
    assert [t.state == optuna.trial.TrialState.PRUNED for t in study.trials] == \
        [s < threshold for s in got]


# --------------------------------------------------------------------------- callback


def test_queue_callback_runs_the_pool_best_first_and_records_scores():
    pool = SPACE.sample_many(10, seed=5, unique=True)
    queue = ProxyQueueCallback(SPACE, pool=pool, proxy="params", build_kwargs=TINY)
    ranked = sorted(zip(params_scores(pool), range(10)), key=lambda p: (-p[0], p[1]))
    assert [a for a, _ in queue.ranked()] == [pool[i] for _, i in ranked]

    pruner = GHNProxyPruner(SPACE, "params", quantile=0.0, reference=pool, build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    assert queue.enqueue(study) == [pool[ranked[0][1]]]
    study.optimize(objective_with_pruning, n_trials=4, callbacks=[queue])
    done = study.trials[:4]
    assert [t.user_attrs[ARCH_ATTR] for t in done] == [SPACE.validate(pool[i]) for _, i in ranked[:4]]
    assert [t.user_attrs[SCORE_ATTR] for t in done] == [s for s, _ in ranked[:4]]
    assert all(t.user_attrs[KEY_ATTR] == pruner.scorer.key for t in done)
    # the pruner reused the recorded scores instead of scoring the trials again
    assert set(pruner.scorer.scored.archs) == {SPACE.validate(a) for a in pool}
    # one more trial stays queued; architectures already tried are never queued again
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[ARCH_ATTR] for t in waiting] == [SPACE.validate(pool[ranked[4][1]])]
    assert queue.enqueue(study, 100) == [pool[i] for _, i in ranked[5:]]
    assert queue.enqueue(study, 1) == []


# --------------------------------------------------------------------------- storage

WORKER = """
import os, sys
import optuna, torch
torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
sys.path.insert(0, {tests!r})
from test_optuna import SPACE, suggest_architecture, _pruner
url, mode, seed, n_trials, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pruner = _pruner(mode)
storage = optuna.storages.RDBStorage(url, engine_kwargs={{"connect_args": {{"timeout": 60}}}})
study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True, pruner=pruner,
                            sampler=optuna.samplers.RandomSampler(seed=seed))
count = 0
def objective(trial):
    global count
    arch = suggest_architecture(trial, SPACE)
    pruned = trial.should_prune()
    if count == crash_after:
        os._exit(3)  # a crash in the middle of a trial
    count += 1
    if pruned:
        raise optuna.TrialPruned()
    return float(len(arch))
study.optimize(objective, n_trials=n_trials)
"""


def _worker(tmp_path: Path, url: str, mode: str, seed: int, n_trials: int, crash_after: int = -1):
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), url, mode, str(seed), str(n_trials),
                             str(crash_after)], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc, rc=0):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == rc, out


def _pruner(mode: str) -> GHNProxyPruner:
    # the same pruner as the worker script's
    if mode == "reference":
        return GHNProxyPruner(SPACE, "params", quantile=0.5, reference=12, reference_seed=7, build_kwargs=TINY)
    return GHNProxyPruner(SPACE, "params", quantile=0.5, n_startup_trials=2, build_kwargs=TINY)


def _run_here(url: str, mode: str, seed: int, n_trials: int):
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True, pruner=_pruner(mode),
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective_with_pruning, n_trials=n_trials)


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # as Optuna advises for parallel workers: create the study (and the schema) first
    optuna.create_study(study_name="s", storage=url)
    other = _worker(tmp_path, url, "reference", 1, 4)  # a second process, running meanwhile
    study = optuna.load_study(study_name="s", storage=url)
    for _ in range(600):  # let the other process start its trials, so that the two overlap
        if study.get_trials(deepcopy=False) or other.poll() is not None:
            break
        time.sleep(0.1)
    _run_here(url, "reference", 0, 4)
    _wait(other)
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.trials
    assert len(trials) == 8
    reference = SPACE.sample_many(12, seed=7, unique=True)
    threshold = float(np.quantile(params_scores(reference), 0.5))
    archs = [t.user_attrs[ARCH_ATTR] for t in trials]
    values = params_scores(archs)
    assert [t.user_attrs[SCORE_ATTR] for t in trials] == values
    assert [t.state == optuna.trial.TrialState.PRUNED for t in trials] == [v < threshold for v in values]
    assert all(t.state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE) for t in trials)
    assert study.user_attrs["ghnas_proxy_reference"]["archs"] == reference


def test_resumed_study_keeps_proxy_scores(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _wait(_worker(tmp_path, url, "history", 0, 10, crash_after=3), rc=3)
    before = optuna.load_study(study_name="s", storage=url).trials
    assert len(before) == 4 and before[-1].state == optuna.trial.TrialState.RUNNING
    assert all(SCORE_ATTR in t.user_attrs for t in before)  # the crashed trial's too
    _run_here(url, "history", 1, 4)  # resume: new study object, new pruner, same storage
    study = optuna.load_study(study_name="s", storage=url)
    after = study.trials
    assert len(after) == 8
    for old, new in zip(before, after):
        assert new.user_attrs[SCORE_ATTR] == old.user_attrs[SCORE_ATTR]
        assert new.user_attrs[ARCH_ATTR] == old.user_attrs[ARCH_ATTR]
    # the resumed run ranked its trials against the scores stored before the crash
    values = [t.user_attrs[SCORE_ATTR] for t in after]
    for i in range(4, 8):
        expected = values[i] < float(np.quantile(values[:i], 0.5))
        assert (after[i].state == optuna.trial.TrialState.PRUNED) == expected, i
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in after[4:])


# --------------------------------------------------------------------------- misc


def test_scorer_matches_score_and_is_memoised(tmp_path):
    archs = SPACE.sample_many(3, seed=8)
    cache = tmp_path / "cache.jsonl"
    scorer = ProxyScorer(SPACE, "synflow", build_kwargs=TINY, cache=cache, device="cpu")
    assert scorer.scores(archs) == score(archs, SPACE, "synflow", build_kwargs=TINY, progress=False,
                                         device="cpu").scores
    lines = cache.read_text().splitlines()
    assert scorer.score(archs[0]) == scorer.scores(archs)[0]
    assert cache.read_text().splitlines() == lines  # memo: nothing scored twice
    again = ProxyScorer(SPACE, "synflow", build_kwargs=TINY, cache=cache, device="cpu")
    assert again.table(archs).scores == scorer.scores(archs) and again.key == scorer.key
    assert ProxyScorer(SPACE, "synflow", build_kwargs=TINY, seed=1).key != scorer.key


def test_import_ghnas_imports_neither_optuna_nor_ray():
    code = textwrap.dedent("""
        import sys, ghnas, ghnas.integrations, ghnas.proxies
        ghnas.GHN2
        bad = [m for m in ('optuna', 'ray') if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


def test_example_runs_shortened(tmp_path, random_ghn):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import optuna_pruner
    finally:
        sys.path.pop(0)
    out = tmp_path / "result.json"
    study = optuna_pruner.main(["--ghn", str(random_ghn), "--trials", "4", "--steps", "1",
                                "--train-images", "32", "--val-images", "32", "--batch-size", "16",
                                "--proxy-images", "16", "--reference", "3", "--seed", "0",
                                "--storage", f"sqlite:///{tmp_path / 'ex.db'}", "--out", str(out)])
    assert len(study.trials) == 4
    assert all(SCORE_ATTR in t.user_attrs for t in study.trials)
    result = json.loads(out.read_text())
    assert result["n_trials"] == 4 and result["n_pruned"] + result["n_complete"] == 4


# --------------------------------------------------------------------------- aggregates (issue 11)


def test_scorer_ranks_an_aggregate_over_every_architecture_seen(tmp_path):
    from ghnas.proxies import rank_aggregate

    archs = SPACE.sample_many(6, seed=21, unique=True)
    cache = tmp_path / "c.jsonl"
    scorer = ProxyScorer(SPACE, "params+flops", build_kwargs=TINY, cache=cache, device="cpu")
    assert scorer.is_aggregate and scorer.higher_is_better
    assert scorer.score(archs[0]) == 0.5  # alone in its set
    first = [scorer.score(a) for a in archs[1:4]]  # each its rank at that moment
    assert len(set(first)) > 1
    p = score(archs, SPACE, "params", data=None, build_kwargs=TINY, progress=False).scores
    f = score(archs, SPACE, "flops", data=None, build_kwargs=TINY, progress=False).scores
    assert first[-1] == rank_aggregate([p[:4], f[:4]], [True, True])[3]
    lines = len(cache.read_text().splitlines())
    assert lines == 8  # each member scored each architecture once
    now = scorer.scores(archs)  # the whole set seen, ranked together
    assert now == pytest.approx(rank_aggregate([p, f], [True, True]))
    assert len(cache.read_text().splitlines()) == 12
    assert scorer.scores(archs[:2]) == now[:2]  # the set, not the call, is ranked
    # another scorer with the same cache scores nothing again; a member added later scores alone
    wider = ProxyScorer(SPACE, "params+flops+synflow", build_kwargs=TINY, cache=cache, device="cpu")
    wider.scores(archs)
    assert len(cache.read_text().splitlines()) == 12 + 6
    assert wider.key != scorer.key


def test_pruner_with_an_aggregate_compares_current_ranks():
    from ghnas.proxies import rank_aggregate

    reference = SPACE.sample_many(8, seed=22, unique=True)
    trials = SPACE.sample_many(4, seed=23, unique=True)
    pruner = GHNProxyPruner(SPACE, "params+flops", quantile=0.5, reference=reference, build_kwargs=TINY)
    study = optuna.create_study(pruner=pruner)
    run_archs(study, trials, objective_with_pruning)
    every = reference + [SPACE.validate(a) for a in trials]
    p = score(every, SPACE, "params", data=None, build_kwargs=TINY, progress=False).scores
    f = score(every, SPACE, "flops", data=None, build_kwargs=TINY, progress=False).scores
    for i, t in enumerate(study.trials):  # the rank when the trial was judged: reference + trials so far
        n = len(reference) + i + 1
        agg = rank_aggregate([p[:n], f[:n]], [True, True])
        assert t.user_attrs[SCORE_ATTR] == pytest.approx(agg[-1])
        pruned = t.state == optuna.trial.TrialState.PRUNED
        assert pruned == (agg[-1] < float(np.quantile(agg[:len(reference)], 0.5)))
    # the threshold now: the reference ranked among everything seen
    final = rank_aggregate([p, f], [True, True])
    assert pruner.threshold(study) == pytest.approx(float(np.quantile(final[:len(reference)], 0.5)))
