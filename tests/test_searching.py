"""The concepts with one home (issues 10 and 12): GHN proxies decided in one place, the
GHN value type, strategies as classes, degenerate results, run folders, budgets, small
image folders."""
from __future__ import annotations

import json
import math
import time
import warnings

import pytest
import torch

import search_spaces
from ghnas._io import RunFolder
from ghnas.cli import main
from ghnas.data import ImageData, default_val_size
from ghnas.errors import DegenerateResultWarning, InputError
from ghnas.ghn import GHN2, GHNRef, save_ghn
from ghnas.proxies.ghn import GHNProxy
from ghnas.searching import (RandomSearch, SearchState, Strategy, get_strategy, prepare_proxy,
                             register_strategy, run_strategy, search)

TINY = {"C": 4, "N": 1}
NB = search_spaces.get("nb201")
pytestmark = pytest.mark.filterwarnings("ignore:the GHN's shape encoding has no entry",
                                        "ignore:.*not used by the forward pass", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ghn():
    torch.manual_seed(0)
    return GHN2(hid=16, max_shape=(16, 16, 3, 3)).eval()


@pytest.fixture(scope="module")
def ghn_file(ghn, tmp_path_factory):
    return str(save_ghn(ghn, tmp_path_factory.mktemp("ghn") / "g.pt"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _images(n: int, classes: int, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.arange(n) % classes, [f"c{i}" for i in range(classes)])


def _imagefolder(root, classes=("cat", "dog"), per_class=12):
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for c in classes:
        d = root / c
        d.mkdir(parents=True)
        for i in range(per_class):
            write_png(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g), str(d / f"{i}.png"))
    return root


# ----------------------------------------------------------------------------- the four GHN-proxy cases
def test_cli_search_with_ghn_acc_and_ghn(capsys, tmp_path, ghn_file):
    code, out, err = run(capsys, "search", "--proxy", "ghn_acc", "--ghn", ghn_file, "--budget", 3,
                         "--build", "C=4,N=1", "--batch-size", 16, "--out", tmp_path, "-q", "--device", "cpu")
    assert code in (0, 3), err  # 3: a random GHN may give every network the same accuracy
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["proxy"] == "ghn_acc" and res["settings"]["ghn"] == ghn_file


def test_build_warm_starts_ghn_acc_results(ghn):
    from ghnas.graph import extract

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)
        r = search("nb201", budget=3, proxy="ghn_acc", ghn=ghn, build_kwargs=TINY, batch_size=16,
                   progress=False, device="cpu")
    arch = r.table[0].arch
    model = r.build(arch)
    pred = ghn.predict([extract(NB.build(arch, **TINY))])[0]
    params = dict(model.named_parameters())
    for k, v in pred.items():
        torch.testing.assert_close(params[k].detach(), v)


def test_correlate_gives_ghn_to_the_ensemble_member(capsys, tmp_path, ghn_file, monkeypatch):
    def no_default(space):
        raise AssertionError("the shipped GHN was used instead of --ghn")

    monkeypatch.setattr(GHNRef, "default", classmethod(lambda cls, space: no_default(space)))
    truth = tmp_path / "truth.csv"
    truth.write_text("arch,test_acc\n" + "\n".join(f"{a},{80 + i}" for i, a in
                                                   enumerate(NB.sample_many(6, seed=3, unique=True))) + "\n")
    code, out, err = run(capsys, "correlate", "--truth", truth, "--proxies", "ghn+synflow", "--ghn", ghn_file,
                         "--build", "C=4,N=1", "--n-boot", 10, "--out", tmp_path / "c", "-q", "--device", "cpu")
    assert code == 0, err
    rec = json.loads((tmp_path / "c" / "run.json").read_text())["settings"]["proxies"]["ghn+synflow"]
    # the ensemble's batch is its largest member's: the GHN proxy's
    assert rec["ghn"] == ghn_file and rec["batch_size"] == GHNProxy.default_batch_size == 1000


def test_a_vote_gets_the_same_images_in_search_and_correlate(ghn):
    for name in ("vote:ghn,params", "ghn+synflow", "ghn"):
        assert prepare_proxy(NB, name, ghn=ghn).batch_size == GHNProxy.default_batch_size
    assert prepare_proxy(NB, "vote:params,naswot").batch_size == 64
    r = search("nb201", budget=2, proxy="vote:ghn,params", ghn=ghn, build_kwargs=TINY, progress=False,
               device="cpu")
    assert r.settings["batch_size"] == GHNProxy.default_batch_size


# ----------------------------------------------------------------------------- GHN value type
def test_ghn_ref_kinds(ghn, ghn_file):
    assert GHNRef.of(ghn_file).saved and GHNRef.of(ghn_file).label == ghn_file
    mem = GHNRef.of(ghn)
    assert not mem.saved and mem.to_json() is None and "in-memory" in mem.label
    assert GHNRef.of(mem) is mem and mem.load("cpu") is ghn
    assert GHNRef.default("nb201").label == "ghnas-nb201-cifar10"
    assert GHNRef.of("ghnas-darts-cifar10").build_kwargs("darts") == {"C": 8, "layers": 5}
    assert GHNRef.of(ghn_file).load("cpu") is GHNRef.of(ghn_file).load("cpu")  # read once per process
    with pytest.raises(FileNotFoundError, match="no GHN is shipped for space 'foo'"):
        GHNRef.default("foo")
    with pytest.raises(TypeError, match="GHN name"):
        GHNRef.of(3)


def test_the_ghn_proxy_defaults_to_a_ranking_ghn_and_warm_starts_from_the_predicting_one(ghn, tmp_path,
                                                                                          monkeypatch):
    from ghnas.ghn import default_ghn_name, hub, register_ghn
    from ghnas.ghn.hub import git_blob_sha1
    from ghnas.warm import warm_start

    monkeypatch.setattr(hub, "_REGISTRY", dict(hub._REGISTRY))
    assert default_ghn_name("darts", "rank") == "ghnas-darts-cifar10-rank"
    hub._REGISTRY.pop("ghnas-nb201-cifar10-rank", None)
    hub._REGISTRY.pop("ghnas-darts-cifar10-rank", None)
    assert default_ghn_name("nb201", "rank") == "ghnas-nb201-cifar10"  # none for ranking: the predicting one
    with pytest.raises(ValueError, match="purpose"):
        default_ghn_name("nb201", "guess")
    with pytest.raises(ValueError, match="purpose"):
        register_ghn("x", asset="x.pt", purpose="guess")
    src = save_ghn(ghn, tmp_path / "rank.pt") or tmp_path / "rank.pt"
    register_ghn("ghnas-nb201-cifar10-rank", url=src.as_uri(), git_sha1=git_blob_sha1(src), space="nb201",
                 build_kwargs={"C": 8, "N": 1}, purpose="rank")
    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))
    assert default_ghn_name("nb201", "rank") == "ghnas-nb201-cifar10-rank"
    assert default_ghn_name("nb201") == "ghnas-nb201-cifar10" and GHNRef.default("nb201").label == "ghnas-nb201-cifar10"
    assert default_ghn_name("darts", "rank") == "ghnas-darts-cifar10"
    proxy = GHNProxy()
    proxy.identity(search_spaces.get("nb201"))
    assert proxy.ghn == "ghnas-nb201-cifar10-rank"
    r = search("nb201", budget=2, proxy="ghn", build_kwargs=TINY, progress=False, device="cpu")
    assert r.settings["ghn"] == "ghnas-nb201-cifar10-rank"
    # warm starts want accurate parameters: the space's predicting GHN, not the ranking one
    torch.manual_seed(0)  # parameters of dead ops keep their initialisation
    built = r.build(C=4, N=1)
    torch.manual_seed(0)
    ref = warm_start(search_spaces.get("nb201").build(r.best_arch, C=4, N=1), "ghnas-nb201-cifar10")
    for (k, a), b in zip(built.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k


def test_ghn_given_to_a_proxy_without_one_is_refused(ghn):
    with pytest.raises(InputError, match="only used by GHN proxies"):
        prepare_proxy(NB, "params", ghn=ghn)
    assert prepare_proxy(NB, "params", ghn=ghn, ghn_only_if_needed=True).ghn is None


# ----------------------------------------------------------------------------- strategies as classes
def test_a_user_strategy_plugs_in():
    @register_strategy("every_other_test", overwrite=True)
    class EveryOther(Strategy):
        def __init__(self, step: int = 2):
            self.step = step

        def run(self, state: SearchState) -> None:
            while state.left:
                state.evaluate([state.random_unseen()])

    r = search("nb201", budget=3, proxy="params", strategy="every_other_test", step=3, progress=False,
               build_kwargs=TINY)
    assert r.strategy == "every_other_test" and r.settings["strategy_kwargs"] == {"step": 3}
    assert isinstance(get_strategy("random"), RandomSearch)
    with pytest.raises(InputError, match="unknown option"):
        get_strategy("evolution", populaton=3)


# ----------------------------------------------------------------------------- issue 12
def test_degenerate_search_names_no_winner(tmp_path, capsys):
    one_class = _images(16, 1)
    with pytest.warns(DegenerateResultWarning, match="equal"):
        r = search("nb201", budget=3, proxy="snip", data=one_class, build_kwargs=TINY, progress=False,
                   device="cpu", batch_size=8)
    assert r.best_arch is None and math.isnan(r.best_score) and "equal" in r.degenerate
    assert "no best architecture" in r.summary()
    with pytest.raises(InputError, match="no best architecture"):
        r.build()
    folder = _imagefolder(tmp_path / "one", classes=("only",))
    code, out, err = run(capsys, "search", "--proxy", "snip", "--data", f"imagefolder:{folder}", "--budget", 3,
                         "--build", "C=4,N=1", "--batch-size", 4, "--out", tmp_path / "s", "-q")
    assert code == 3 and "no best architecture" in err and "best:" not in out


def test_degenerate_score_table_and_correlation(capsys, tmp_path):
    from ghnas.correlation import correlate
    from ghnas.proxies import score

    t = score(NB.sample_many(3, seed=0, unique=True), "nb201", "snip", data=_images(8, 1),
              build_kwargs={**TINY, "num_classes": 1}, progress=False, batch_size=8)
    assert t.degenerate and "equal" in t.degenerate
    archs = NB.sample_many(6, seed=1, unique=True)
    rep = correlate({"flat": {a: 0.0 for a in archs}, "ok": {a: float(i) for i, a in enumerate(archs)}},
                    {a: float(i) for i, a in enumerate(archs)}, n_boot=5)
    assert rep["flat"].degenerate and rep["ok"].degenerate is None
    assert "flat ranked nothing" in rep.table()


def test_run_folder_refuses_other_settings_and_resumes_same(tmp_path):
    kw = dict(space="nb201", budget=2, proxy="params", build_kwargs=TINY, progress=False, out_dir=tmp_path)
    a = search(seed=1, **kw)
    with pytest.raises(InputError, match="other settings.*seed: 1 -> 2"):
        search(seed=2, **kw)
    assert json.loads((tmp_path / "result.json").read_text())["seed"] == 1  # not overwritten
    b = search(seed=1, **kw)  # same settings: resumes from the cache
    assert all(c.cached for c in b.table) and [c.arch for c in a.table] == [c.arch for c in b.table]


def test_run_folder_lock_blocks_a_concurrent_run(tmp_path):
    (tmp_path / ".lock").write_text("pid 999999\n")  # a stale lock of a killed run: no obstacle
    with RunFolder(tmp_path, "search", {"x": 1}):
        with pytest.raises(InputError, match="in use by a running job"):
            with RunFolder(tmp_path, "search", {"x": 1}):
                pass
    with RunFolder(tmp_path, "search", {"x": 1}):  # released on exit
        pass
    with pytest.raises(InputError, match="holds a 'search' run"):
        with RunFolder(tmp_path, "correlate", {"x": 1}):
            pass


def test_cli_second_search_with_other_settings_is_refused(capsys, tmp_path):
    argv = ["search", "--proxy", "params", "--budget", 2, "--build", "C=4,N=1", "--out", tmp_path, "-q"]
    assert run(capsys, *argv, "--seed", 1)[0] == 0
    code, out, err = run(capsys, *argv, "--seed", 2)
    assert code == 2 and "other settings" in err and "Traceback" not in err
    assert json.loads((tmp_path / "result.json").read_text())["seed"] == 1


@pytest.mark.parametrize("strategy", ["evolution", "tpe", "random"])
def test_budget_beyond_the_space_fails_up_front(strategy):
    calls = []
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="exceeds the 8765 distinct architectures"):
        run_strategy(strategy, NB, 8766, lambda archs: calls.extend(archs) or [0.0] * len(archs))
    assert calls == [] and time.perf_counter() - t0 < 30


def test_small_image_folders_get_a_small_validation_split(tmp_path, monkeypatch):
    from ghnas import data as gdata
    from ghnas.searching import proxy_images

    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))
    folder = _imagefolder(tmp_path / "imgs", per_class=30)  # 60 images: far below 5,000
    assert default_val_size(50_000) == 5000 and default_val_size(60) == 6
    assert len(proxy_images(f"imagefolder:{folder}")) == 6
    assert len(proxy_images(f"imagefolder:{folder}", val_size=10)) == 10
    assert len(gdata.load(f"imagefolder:{folder}", split="train")) == 54
    r = search("nb201", budget=2, proxy="naswot", data=f"imagefolder:{folder}", val_size=20, batch_size=8,
               build_kwargs=TINY, progress=False)
    assert r.settings["val_size"] == 20 and r.settings["build_kwargs"]["num_classes"] == 2
    with pytest.raises(InputError, match="val_size=60 must be smaller"):
        proxy_images(f"imagefolder:{folder}", val_size=60)


def test_import_ghnas_reaches_subpackages_lazily():
    import subprocess
    import sys

    code = ("import sys, ghnas; assert 'torch' not in sys.modules; "
            "assert callable(ghnas.proxies.score) and ghnas.correlation.kendall_tau; "
            "assert ghnas.integrations.ProxyScorer and callable(ghnas.search)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_cli_score_out_folder_follows_the_same_rule(capsys, tmp_path):
    a, b = NB.sample_many(2, seed=5, unique=True)
    argv = ["score", "--proxy", "params", "--build", "C=4,N=1", "--out", tmp_path / "s", "-q"]
    assert run(capsys, *argv, a)[0] == 0
    assert run(capsys, *argv, a)[0] == 0  # same input: resumes (served from the cache)
    code, _, err = run(capsys, *argv, b)
    assert code == 2 and "other settings" in err


def test_cli_reports_a_bug_with_its_traceback(capsys, monkeypatch):
    import ghnas.cli as cli

    def broken(args):
        raise KeyError("internal")  # a bug, not bad input: it must not look like a user error

    monkeypatch.setattr(cli, "cmd_score", broken)
    with pytest.raises(KeyError):
        main(["score", "--proxy", "params", NB.sample(0)])
    assert "internal error" in capsys.readouterr().err
    code, _, err = run(capsys, "search", "--proxy", "params", "--device", "warp9", "--budget", 2)
    assert code == 2 and "bad --device 'warp9'" in err


# ----------------------------------------------------------------------------- set-level aggregates (issue 11)
AGG = "params+flops"


def _recording(monkeypatch) -> list[tuple[list[str], list[float]]]:
    """Every (archs, values) a strategy got back from SearchState.evaluate."""
    seen: list[tuple[list[str], list[float]]] = []
    original = SearchState.evaluate

    def evaluate(self, archs):
        values = original(self, archs)
        seen.append((list(archs)[: len(values)], list(values)))
        return values

    monkeypatch.setattr(SearchState, "evaluate", evaluate)
    return seen


_MEMBER_SCORES: dict[str, tuple[float, float]] = {}


def _whole_set(archs: list[str]) -> dict[str, float]:
    """The aggregate of ``archs`` ranked as one set: rank_aggregate of the members' own scores."""
    from ghnas.proxies import rank_aggregate, score

    new = [a for a in archs if a not in _MEMBER_SCORES]
    if new:
        p, f = (score(new, "nb201", m, data=None, build_kwargs=TINY, progress=False, device="cpu").scores
                for m in ("params", "flops"))
        _MEMBER_SCORES.update(zip(new, zip(p, f)))
    cols = [[_MEMBER_SCORES[a][i] for a in archs] for i in (0, 1)]
    return dict(zip(archs, rank_aggregate(cols, [True, True])))


@pytest.mark.parametrize("strategy, options", [("random", {"chunk": 4}),
                                               ("evolution", {"population": 4, "sample_size": 3, "chunk": 4}),
                                               ("tpe", {"n_startup_trials": 4})])
def test_strategies_rank_an_aggregate_over_everything_scored(monkeypatch, strategy, options):
    calls = _recording(monkeypatch)
    r = search("nb201", budget=12, proxy=AGG, strategy=strategy, build_kwargs=TINY, progress=False,
               device="cpu", **options)
    order = [a for a, _ in sum(([(a, v) for a, v in zip(*c)] for c in calls), [])]
    assert len(order) == 12
    # each value a strategy saw is the rank among everything scored up to then
    done: list[str] = []
    for archs, values in calls:
        done += archs
        now = _whole_set(done)
        assert values == pytest.approx([now[a] for a in archs])
    singles = [v[0] for a, v in calls if len(a) == 1]
    if strategy != "random":  # children are scored one at a time: they must not all tie at 0.5
        assert len(singles) >= 4 and len(set(singles)) > 1
    # the final table: re-ranked over the whole set, best first, members kept
    final = _whole_set(order)
    assert [c.score for c in r.table] == pytest.approx(sorted(final.values(), reverse=True))
    assert {c.arch: c.score for c in r.table} == pytest.approx(final)
    assert r.best_arch == max(final, key=lambda a: (final[a], -order.index(a)))
    assert all(set(c.members) == {"params", "flops"} for c in r.table)
    assert r.history[-1] == r.best_score and r.history == sorted(r.history)


def test_strategies_compare_by_the_current_scores():
    """With ``current`` the strategy ranks by the values now, not by those at evaluation:
    a scorer that reports 0 when asked and the truth afterwards runs the same search as
    one that reports the truth at once."""
    truth = {}

    def value(a):
        return truth.setdefault(NB.hash(a), float(NB.encode(a)[0] * 10 + NB.encode(a)[3]))

    for strategy, options in (("evolution", {"population": 4, "sample_size": 3}), ("tpe", {"n_startup_trials": 3})):
        plain = run_strategy(strategy, NB, 14, lambda archs: [value(a) for a in archs], seed=3, **options)
        late = run_strategy(strategy, NB, 14, lambda archs: [0.0] * len(archs), seed=3,
                            current=lambda archs: [value(a) for a in archs], **options)
        assert [a for a, _ in late] == [a for a, _ in plain], strategy
        assert [v for _, v in late] == [v for _, v in plain]  # the log holds the values now
        blind = run_strategy(strategy, NB, 14, lambda archs: [0.0] * len(archs), seed=3, **options)
        assert [a for a, _ in blind] != [a for a, _ in plain], strategy


def test_an_aggregate_search_resumes_from_its_members_cache(tmp_path, monkeypatch):
    r1 = search("nb201", budget=8, proxy=AGG, strategy="evolution", population=4, build_kwargs=TINY,
                progress=False, device="cpu", out_dir=tmp_path / "s")
    lines = (tmp_path / "s" / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 16  # one entry per member and architecture
    from ghnas.proxies import Proxy

    def no_scoring(*a, **k):
        raise AssertionError("a resumed search scored again")

    monkeypatch.setattr(Proxy, "score_archs", no_scoring)
    r2 = search("nb201", budget=8, proxy=AGG, strategy="evolution", population=4, build_kwargs=TINY,
                progress=False, device="cpu", out_dir=tmp_path / "s")
    assert [(c.arch, c.score) for c in r2.table] == [(c.arch, c.score) for c in r1.table]
    assert all(c.cached for c in r2.table)


def test_cli_correlate_ranks_an_aggregate_over_the_whole_truth_set(capsys, tmp_path):
    import csv

    from ghnas.proxies import rank_aggregate

    archs = NB.sample_many(8, seed=4, unique=True)
    truth = tmp_path / "truth.csv"
    truth.write_text("arch,test_acc\n" + "\n".join(f"{a},{80 + i}" for i, a in enumerate(archs)) + "\n")
    code, out, err = run(capsys, "correlate", "--truth", truth, "--proxies", "params,flops,params+flops",
                         "--build", "C=4,N=1", "--n-boot", 10, "--out", tmp_path / "c", "-q", "--device", "cpu")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "c" / "scores.csv")))
    cols = [[float(r[m]) for r in rows] for m in ("params", "flops")]
    assert [float(r["params+flops"]) for r in rows] == pytest.approx(rank_aggregate(cols, [True, True]))
    entries = (tmp_path / "c" / "scores.jsonl").read_text().splitlines()
    assert len(entries) == 16  # the aggregate reused the members' scores: nothing scored twice
