"""The GHN benchmarks' logic: dev-set halves, snapshot discovery, the replay of a run's
training architectures, and the proxy-curve scores equal the GHN proxy's."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import search_spaces
from conftest import write_truth_csv

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gb():
    return _module("_ghnbench")


def test_dev_halves_are_even_and_odd_rows(gb, tmp_path):
    sp = search_spaces.get("nb201")
    archs = sp.sample_many(9, seed=3)
    path = write_truth_csv(tmp_path / "dev.csv", archs, 90)
    tune = gb.dev_half("nb201", "tune", path, "arch", "test_acc")
    report = gb.dev_half("nb201", "report", path, "arch", "test_acc")
    assert list(tune.values()) == [90, 92, 94, 96, 98] and list(report.values()) == [91, 93, 95, 97]
    assert list(tune) == [sp.validate(a) for a in archs[0::2]]
    sub = gb.dev_half("nb201", "tune", path, "arch", "test_acc", max_archs=3)
    assert len(sub) == 3 and set(sub) <= set(tune)
    assert sub == gb.dev_half("nb201", "tune", path, "arch", "test_acc", max_archs=3)  # fixed subsample
    with pytest.raises(ValueError, match="unknown dev-set half 'train'"):
        gb.dev_half("nb201", "train", path, "arch", "test_acc")


def test_snapshot_discovery(gb, tmp_path):
    for name in ("ghn_step1000.pt", "ghn_step250.pt", "ghn_step500.pt", "ghn.pt", "ghn_best.pt", "ghn_step5.pt.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert [s for s, _ in gb.discover_snapshots(tmp_path)] == [250, 500, 1000]
    assert [s for s, _ in gb.discover_snapshots(tmp_path, every=500)] == [500, 1000]
    assert [s for s, _ in gb.discover_snapshots(tmp_path, max_step=500, last=1)] == [500]
    with pytest.raises(FileNotFoundError):
        gb.discover_snapshots(tmp_path / "missing")


def test_replay_matches_the_architectures_meta_training_draws(gb):
    from ghnas.ghn import GHN2
    from ghnas.metatrain import MetaTrainConfig, _ArchPool, _StepInputs, resolve_sizes

    cfg = MetaTrainConfig(space="nb201", data="sample", steps=4, meta_batch=3, sizes="C=4,N=1@1;C=4,N=2@1",
                          eval_archs=5, hid=8, max_shape=(8, 8, 3, 3), seed=3)
    pool = _ArchPool(cfg)
    train, evals = resolve_sizes(cfg, "nb201", {}, pool.cost)
    import dataclasses

    cfg = dataclasses.replace(cfg, sizes=tuple(train), eval_sizes=tuple(evals))
    inputs = _StepInputs(pool, cfg, GHN2(hid=8, max_shape=(8, 8, 3, 3)).shape_enc, 10)
    drawn = {pool.space.hash(a) for i in range(cfg.steps) for a in inputs[i][1]}
    assert gb.trained_hashes(pool, cfg, cfg.steps) == drawn
    archs, found = gb.never_trained(pool, cfg, 8, seed=0)
    assert archs[:5] == pool.heldout and found["run_heldout"] == 5 and found["fresh_unseen"] == 3
    assert not {pool.space.hash(a) for a in archs} & drawn
    assert len({pool.space.hash(a) for a in archs}) == 8


def test_curve_scores_equal_the_ghn_proxy(random_ghn):
    import ghnas.data
    from ghnas.ghn import load_ghn
    from ghnas.proxies import load_batches
    from ghnas.proxies.ghn import GHNProxy

    curve = _module("ghn_proxy_curve")
    sp = search_spaces.get("nb201")
    archs = sp.sample_many(3, seed=1, unique=True)
    build = {"C": 4, "N": 1}
    data = ghnas.data.load("sample")
    ghn = load_ghn(random_ghn)
    nets = curve.Networks(sp, archs, build)
    x, y = curve.image_batch(data, 300, seed=2)
    cache = _module("_ghnbench").JsonlCache(Path(random_ghn).parent / "c.jsonl")
    recs = curve.score_snapshot(ghn, "d", nets, archs, x, y, 2, build, cache)
    for metric in curve.METRICS:
        for n in (100, 200):
            ours = curve.base_vector(recs, archs, metric, n)
            ref = GHNProxy(ghn=ghn, metric=metric).score_archs(archs, sp, load_batches(data, n, seed=2), build, seed=2)
            assert ours == pytest.approx(ref, abs=1e-5)
    again = curve.score_snapshot(ghn, "d", nets, archs, x, y, 2, build,
                                 _module("_ghnbench").JsonlCache(Path(random_ghn).parent / "c.jsonl"))
    assert again == recs  # served from the cache file


def test_rank_mean_rows_score_each_group_of_seeds_once(random_ghn, tmp_path):
    import ghnas.data

    choose, curve = _module("choose_ranking_ghn"), _module("ghn_proxy_curve")
    sp = search_spaces.get("nb201")
    archs = sp.sample_many(5, seed=1, unique=True)
    truth = np.arange(5.0)
    build = {"C": 4, "N": 1}
    cache = _module("_ghnbench").JsonlCache(tmp_path / "c.jsonl")
    rows = choose.score_all(sp, archs, truth, [("g", random_ghn, "test")], [100], [0, 1, 2, 3],
                            ghnas.data.load("sample"), cache, [build], rank_mean_batches=2)
    single = {r["metric"]: r for r in rows if r["batches"] == 1}
    pooled = {r["metric"]: r for r in rows if r["batches"] == 2}
    assert set(single) == set(pooled) == set(curve.METRICS)
    assert len(single["prob"]["kendall"]) == 4 and len(pooled["prob"]["kendall"]) == 2
    assert choose.images_label(pooled["prob"]) == "2x100" and choose.images_label(single["prob"]) == "100"
    assert pooled["prob"]["build"] == build and choose.size_label(build) == "C=4,N=1"
    # the rank mean of seeds 2 and 3, recomputed from the cached records
    ghn = __import__("ghnas.ghn", fromlist=["load_ghn"]).load_ghn(random_ghn)
    nets = curve.Networks(sp, archs, build)
    vecs = []
    for seed in (2, 3):
        x, y = curve.image_batch(ghnas.data.load("sample"), 100, seed)
        recs = curve.score_snapshot(ghn, choose.file_digest(random_ghn), nets, archs, x, y, seed, build, cache)
        vecs.append(curve.base_vector(recs, archs, "prob", 100))
    tau, _ = curve.correlations(curve.rank_mean(vecs), truth)
    assert pooled["prob"]["kendall"][1] == pytest.approx(tau)


def test_ensemble_rows_average_the_members_measures_per_architecture(random_ghn, tmp_path):
    """--ensemble: the mean of two GHNs' measures per architecture, never chosen; a GHN with
    itself scores exactly as the GHN alone."""
    import torch

    import ghnas.data
    from ghnas.ghn import GHN2, load_ghn, save_ghn

    choose, curve = _module("choose_ranking_ghn"), _module("ghn_proxy_curve")
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    save_ghn(GHN2(hid=16, max_shape=(16, 16, 3, 3)), other)
    sp = search_spaces.get("nb201")
    archs = sp.sample_many(5, seed=1, unique=True)
    truth, build = np.arange(5.0), {"C": 4, "N": 1}
    cands = [("a", random_ghn, "test"), ("b", other, "test")]
    ens = choose.parse_ensembles(["ab=a+b", "aa=a+a"], ["a", "b"])
    rows = choose.score_all(sp, archs, truth, cands, [100], [0, 1], ghnas.data.load("sample"),
                            _module("_ghnbench").JsonlCache(tmp_path / "c.jsonl"), [build], ensembles=ens)
    by = {(r["ghn"], r["metric"]): r for r in rows}
    assert by[("ab", "prob")]["members"] == ["a", "b"] and "members" not in by[("a", "prob")]
    assert by[("aa", "neg_loss")]["kendall"] == pytest.approx(by[("a", "neg_loss")]["kendall"])
    recs = {lab: curve.score_snapshot(load_ghn(path),
                                      choose.file_digest(path), curve.Networks(sp, archs, build), archs,
                                      *curve.image_batch(ghnas.data.load("sample"), 100, 1), 1, build,
                                      _module("_ghnbench").JsonlCache(tmp_path / "c.jsonl"))
            for lab, path, _ in cands}
    mean_prob = [(recs["a"][x]["prob"][0] + recs["b"][x]["prob"][0]) / 2 for x in archs]
    assert by[("ab", "prob")]["kendall"][1] == pytest.approx(curve.correlations(np.array(mean_prob), truth)[0])
    with pytest.raises(SystemExit, match="not --candidate labels"):
        choose.parse_ensembles(["x=a+c"], ["a", "b"])
    with pytest.raises(SystemExit, match="name=label"):
        choose.parse_ensembles(["x=a"], ["a"])
    with pytest.raises(SystemExit, match="is taken"):
        choose.parse_ensembles(["a=a+b"], ["a", "b"])


def test_committed_run_keeps_the_history_gzipped_and_restores_it(tmp_path):
    train = _module("train_shipped_ghns")
    run, git, again = tmp_path / "run", tmp_path / "git", tmp_path / "again"
    run.mkdir()
    (run / "history.json").write_text('{"history": [' + ",".join(['{"step": 1}'] * 500) + "]}")
    (run / "config.json").write_text('{"space": "nb201"}')
    (run / "state.pt").write_bytes(b"state")
    (run / "ghn_best.pt").write_bytes(b"best")
    git.mkdir()
    (git / "history.json").write_text("{}")  # an older export's plain copy is replaced
    assert train.copy_resume_files(run, git, to_git=True) == ["state.pt", "config.json", "history.json",
                                                              "ghn_best.pt"]
    assert not (git / "history.json").exists()
    assert (git / "history.json.gz").stat().st_size < (run / "history.json").stat().st_size / 5
    train.copy_resume_files(git, again)
    for name in ("history.json", "config.json", "state.pt", "ghn_best.pt"):
        assert (again / name).read_bytes() == (run / name).read_bytes()


def test_rank_mean_puts_nan_last():
    curve = _module("ghn_proxy_curve")
    r = curve.rank_mean([np.array([1.0, np.nan, 3.0]), np.array([3.0, 2.0, 1.0])])
    assert r.tolist() == [2.5, 1.5, 2.0]


def test_score_table_restores_the_caches_of_a_new_machine(tmp_path):
    """bench_proxies on a new machine: the committed table puts back the cached scores it
    holds (and only those), so the run resumes instead of scoring everything again."""
    bp = _module("bench_proxies")
    old = tmp_path / "old"
    bp.cache_file(old, "meco", "proxy", 0).parent.mkdir(parents=True)
    bp.cache_file(old, "meco", "proxy", 0).write_text(
        '{"key": "k1", "arch": "a", "score": 1.5, "seconds": 0.25}\n'
        '{"key": "k1", "arch": "b", "score": -2.0, "seconds": 0.5}\n')
    bp.cache_file(old, "swap", "bench", 1).write_text('{"key": "k2", "arch": "a", "score": 3.0, "seconds": 1.0}\n')
    table = bp.export_scores(old, tmp_path / "scores.csv.gz")

    new = tmp_path / "new"
    bp.cache_file(new, "meco", "proxy", 0).parent.mkdir(parents=True)
    bp.cache_file(new, "meco", "proxy", 0).write_text('{"key": "k9", "arch": "b", "score": -7.0, "seconds": 0.1}\n')
    assert bp.restore_scores(table, new) == 2  # meco/a and swap/a; meco/b is cached already
    assert bp.read_cache(bp.cache_file(new, "meco", "proxy", 0)) == {"b": (-7.0, 0.1), "a": (1.5, 0.25)}
    assert bp.read_cache(bp.cache_file(new, "swap", "bench", 1)) == {"a": (3.0, 1.0)}
    assert bp.restore_scores(table, new) == 0  # idempotent
    assert bp.restore_scores(tmp_path / "absent.csv.gz", new) == 0


def test_default_selection_searches_within_the_budget():
    """choose_default: greedy keeps its first pick; the subset search may trade it for two
    cheaper members that rank better together, never over the budget, and stops adding
    members that gain less than min_gain."""
    cd = _module("choose_default")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    truth = x + y
    cols = {"a": {"scores": list(truth + 0.9 * rng.normal(size=200)), "hib": True, "seconds": 0.5},
            "b": {"scores": list(x), "hib": True, "seconds": 0.2},
            "c": {"scores": list(-y), "hib": False, "seconds": 0.2},  # lower is better
            "noise": {"scores": list(rng.normal(size=200)), "hib": True, "seconds": 0.01}}
    idx = list(range(200))
    greedy = cd.greedy(cols, idx, truth, "mean", 0.5, list(cols))
    assert greedy[0]["members"] == ["a"] and all("a" in p["members"] for p in greedy)
    subsets = cd.best_subsets(cols, idx, truth, "mean", 0.5, list(cols))
    assert subsets[0]["members"] == ["a"] and sorted(subsets[-1]["members"]) == ["b", "c"]
    assert subsets[-1]["tau"] > greedy[-1]["tau"] + 0.01
    assert all(sum(cols[m]["seconds"] for m in p["members"]) <= 0.5 for p in subsets)
    assert "noise" not in subsets[-1]["members"]
    assert cd.best_subsets(cols, idx, truth, "mean", 0.3, list(cols))[-1]["members"] in (["b"], ["c"])


def test_members_that_share_a_pass_cost_what_they_were_measured_at_together():
    cd = _module("choose_default")
    cols = {"a@proxy": {"seconds": 0.3}, "b@proxy": {"seconds": 0.3}, "c@proxy": {"seconds": 0.1}}
    groups = {frozenset({"a", "b"}): 0.35}
    assert cd.cost_of(cols, ["a@proxy", "b@proxy", "c@proxy"], groups) == pytest.approx(0.45)
    assert cd.cost_of(cols, ["a@proxy", "c@proxy"], groups) == pytest.approx(0.4)  # the group is not complete
    assert cd.cost_of(cols, ["a@proxy", "b@proxy"]) == pytest.approx(0.6)
    # the selection counts the group at its joint cost: a + b fit a budget of 0.4 together
    idx, truth = list(range(3)), np.array([0.0, 1.0, 2.0])
    cols = {k: dict(v, scores=[0.0, 1.0, 2.0], hib=True) for k, v in cols.items()}
    assert all(cd.cost_of(cols, p["members"], groups) <= 0.4
               for p in cd.best_subsets(cols, idx, truth, "mean", 0.4, list(cols), min_gain=-1, groups=groups))
    assert any(set(p["members"]) == {"a@proxy", "b@proxy"}
               for p in cd.best_subsets(cols, idx, truth, "mean", 0.4, list(cols), max_members=2,
                                        min_gain=-1, groups=groups))


def test_proxy_variants_are_rows_of_their_own_and_members_of_the_default():
    """A variant row ('swap-r2': SWAP with 2 re-initialisations) scores the registered proxy
    with its own settings, and spells the same Member both ways, so choose_default can
    write it into DEFAULTS and bench_search_pool finds its column again."""
    bp = _module("bench_proxies")
    prox, bs = bp.proxy_for("swap-r2", seed=3)
    assert (prox.repeats, prox.seed, bs) == (2, 3, 16)
    assert bp.proxy_for("swap")[0].repeats == 8  # the benchmark's setting of the plain rows
    for row in ("swap", "swap-r1", "swap-r2", "meco", "jacob_cov", "ghn:1000"):
        assert bp.member_label(bp.as_member(row)) == row
    assert bp.as_member("swap-r2").make().repeats == 2
    assert bp.proxy_direction("swap-r4") is True
    from ghnas.proxies.zero_shot import Member
    with pytest.raises(ValueError, match="no rows"):
        bp.member_label(Member("swap", (("repeats", 3),)))


def test_ghn_rows_are_labelled_by_checkpoint_images_and_the_spaces_metric(tmp_path):
    """The GHN proxy's rows of bench_proxies name what they score: the checkpoint's digest,
    the image count where it is not 200, and the metric where the space's default is not
    the loss (DARTS), so rows of another metric never share a label; and the scoring job
    builds the proxy with that metric."""
    bp = _module("bench_proxies")
    ckpt = tmp_path / "g.pt"
    ckpt.write_bytes(b"not a real checkpoint: only its digest is read")
    nb201, darts = bp.ghn_label(str(ckpt), 200, "nb201"), bp.ghn_label(str(ckpt), 1000, "darts")
    assert nb201.startswith("ghn-") and len(nb201) == len("ghn-") + 8
    assert darts == nb201 + "-i1000-neg_prob"
    assert bp.GHN_FILES[darts] == (str(ckpt), 1000, "neg_prob") and bp.GHN_FILES[nb201][2] == "neg_loss"


def test_default_candidates_are_proxy_size_columns_of_every_row(tmp_path):
    """choose_default's candidates: every proxy scored at the proxy size on all dev rows
    (whatever size the benchmark table reports it at); a column with the tuning rows only
    is left out, also when only the tuning half is read, so both runs see one pool."""
    cd = _module("choose_default")
    archs = ["a", "b", "c", "d"]

    def write(proxy, size, rows):
        lines = [f'{{"key": "k", "arch": "{a}", "score": {i}, "seconds": 0.1}}' for i, a in enumerate(rows)]
        (tmp_path / f"{proxy}__{size}__s0.jsonl").write_text("\n".join(lines) + "\n")

    write("meco", "proxy", archs)
    write("synflow", "proxy", archs[0::2])  # tuning rows only
    write("synflow", "bench", archs)
    write("swap-r1", "proxy", archs)
    full = cd.load_columns("nb201", tmp_path, archs, {})
    assert sorted(full) == ["meco@proxy", "swap-r1@proxy"]
    tuning = cd.load_columns("nb201", tmp_path, archs[0::2], {}, required=archs)
    assert sorted(tuning) == sorted(full) and tuning["meco@proxy"]["scores"] == [0, 2]
    assert "synflow@proxy" in cd.load_columns("nb201", tmp_path, archs[0::2], {})


def test_seed_spread_counts_the_seeds_a_ghn_member_was_scored_on(tmp_path):
    """The default's per-seed reporting tau covers every seed with scores of all members,
    a GHN member (given by --ghn) included, and no seed where one member lacks them."""
    import argparse

    cd = _module("choose_default")
    archs = ["a", "b", "c", "d", "e", "f"]
    truth = np.arange(6.0)

    def write(proxy, seed, order):
        lines = [f'{{"key": "k", "arch": "{a}", "score": {v}, "seconds": 0.1}}' for a, v in zip(archs, order)]
        (tmp_path / f"{proxy}__proxy__s{seed}.jsonl").write_text("\n".join(lines) + "\n")

    for seed in (0, 1, 2):
        write("meco", seed, [0, 1, 2, 3, 4, 5])
    write("ghn-abc", 0, [0, 1, 2, 3, 4, 5])
    write("ghn-abc", 1, [0, 1, 5, 3, 2, 5])  # seed 2: no GHN scores
    # a GHN candidate that is not a member (scored on seed 0 only) does not hide the seeds
    write("ghn-other", 0, [0, 1, 2, 3, 4, 5])
    args = argparse.Namespace(space="nb201", scores=tmp_path, ghn=["ghn:200@proxy=ghn-abc", "ghn:500@proxy=ghn-other"])
    by_seed = cd.seed_spread(args, archs, truth, ["meco@proxy", "ghn:200@proxy"], [0, 2, 4], "mean")
    assert sorted(by_seed) == ["0", "1"]
    assert by_seed["0"] == pytest.approx(1.0) and by_seed["1"] < 0.99  # the GHN's seed-1 order counts


def test_size_study_sample_defaults_to_the_committed_tables():
    """A report on a new machine (``bench_proxies.py --phases report`` without --n-size)
    decides the network sizes on the same tuning sample as the committed tables; with
    another sample (DARTS once ran with 40 instead of 20) the size decisions change."""
    import json

    bp = _module("bench_proxies")
    assert set(bp.SPACES) == {"nb201", "darts"}
    for space, spec in bp.SPACES.items():
        summary = BENCH / "results" / f"proxies_{space}" / "summary.json"
        assert json.loads(summary.read_text())["meta"]["n_size"] == spec["n_size"], space


def test_speed_table_names_the_commands_that_made_its_rows():
    speed = _module("bench_proxy_speed")
    defaults = speed.default_proxies()
    meta = {"out": str(speed.OUT)}
    rows = {p: {} for p in defaults + ["ghn:200"]}
    text = speed.commands("darts", rows, meta)
    assert text.startswith("`python benchmarks/bench_proxy_speed.py --space darts`")
    assert text.endswith("--space darts --proxies ghn:200`")
    only_some = speed.commands("nb201", {"params": {}, "ghn:200": {}}, meta)
    assert only_some == "`python benchmarks/bench_proxy_speed.py --space nb201 --proxies params,ghn:200`"
    elsewhere = speed.commands("nb201", {p: {} for p in defaults}, {"out": str(speed.REPO / "x")})
    assert elsewhere == "`python benchmarks/bench_proxy_speed.py --space nb201 --out x`"


def test_finetune_formulations_per_seed_and_rank_mean_over_seeds():
    """The low-cost proxy: one tau per image seed, or one for the rank mean of the seeds'
    scores, which averages out seed noise (here each seed alone is half wrong)."""
    curve = _module("ghn_proxy_curve")
    archs = [f"a{i}" for i in range(6)]
    truth = np.arange(6, dtype=float)
    noise = {0: [0, 1, 2, 5, 4, 3], 1: [2, 1, 0, 3, 4, 5]}  # each seed right on one half only
    ft = {(100, s, 5, 200): {a: {"loss": -float(v), "acc": 0.1, "prob": 0.1, "closs": 1.0}
                             for a, v in zip(archs, noise[s])} for s in noise}
    single = curve.formulation_taus({"kind": "finetune", "metric": "neg_loss", "n": 200, "steps": 5},
                                    0, [100], {}, archs, truth, [0], ft)
    pooled = curve.formulation_taus({"kind": "finetune_seeds", "metric": "neg_loss", "n": 200, "steps": 5},
                                    0, [100], {}, archs, truth, [0], ft)
    assert len(single) == 2 and len(pooled) == 1
    assert pooled[0][0] > max(t for t, _ in single)
    one_seed = {k: v for k, v in ft.items() if k[1] == 0}
    assert curve.formulation_taus({"kind": "finetune_seeds", "metric": "neg_loss", "n": 200, "steps": 5},
                                  0, [100], {}, archs, truth, [0], one_seed) is None
    forms = curve.candidate_formulations([200], [], [5], 200, 1, n_ft_seeds=2)
    assert {"kind": "finetune_seeds", "metric": "neg_loss", "n": 200, "steps": 5} in forms
    assert curve.formulation_label(forms[-1]).startswith("finetune, rank mean over image seeds")


def test_average_ghns_is_the_uniform_mean_of_the_snapshots(tmp_path):
    import torch

    from ghnas.ghn import GHN2, load_ghn, save_ghn

    avg = _module("average_ghns")
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        paths.append(save_ghn(GHN2(hid=8, max_shape=(8, 8, 3, 3)), tmp_path / f"g{seed}.pt"))
    avg.main([str(tmp_path / "avg.pt"), *map(str, paths)])
    mean, ghns = load_ghn(tmp_path / "avg.pt"), [load_ghn(p) for p in paths]
    for name, value in mean.state_dict().items():
        expect = sum(g.state_dict()[name] for g in ghns) / 3
        assert torch.allclose(value, expect, atol=1e-6), name
    save_ghn(GHN2(hid=16, max_shape=(8, 8, 3, 3)), tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="another GHN"):
        avg.main([str(tmp_path / "x.pt"), str(paths[0]), str(tmp_path / "other.pt")])
    with pytest.raises(SystemExit, match="at least two"):
        avg.main([str(tmp_path / "x.pt"), str(paths[0])])
    with pytest.raises(SystemExit, match="missing"):
        avg.main([str(tmp_path / "x.pt"), str(paths[0]), str(tmp_path / "absent.pt")])
