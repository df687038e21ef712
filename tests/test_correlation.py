"""Tests for ghnas.correlation: ground truth reading, rank statistics, bootstrap, plots."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ghnas import correlation as C
from ghnas.correlation import (
    bootstrap_ci,
    correlate,
    kendall_tau,
    read_proxy_columns,
    read_truth,
    scatter_plots,
    spearman_rho,
    top_k_precision,
)

ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ARCH_B = "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _write(tmp_path: Path, text: str, name: str = "truth.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- statistics against scipy and by hand ------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_match_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=60)
    y = 0.5 * x + rng.normal(size=60)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_statistics_match_scipy_with_ties():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=50).astype(float)
    y = x + rng.integers(0, 3, size=50)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_hand_computed_small_cases():
    # one discordant pair out of six: (6 - 2*1) / 6
    assert kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(4 / 6)
    # sum d^2 = 2 -> 1 - 6*2 / (4*15)
    assert spearman_rho([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with a tie in x: pairs (1,2) conc, (1,3) conc, (2,3) tied in x
    # -> 2 / sqrt((3 - 1) * 3) = 2 / sqrt(6)
    assert kendall_tau([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    # ranks x = [1, 2.5, 2.5], y = [1, 2, 3] -> Pearson of the ranks = sqrt(3) / 2
    assert spearman_rho([1, 2, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)


def test_mappings_align_by_architecture():
    truth = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    scores = {"d": 40.0, "c": 30.0, "b": 20.0, "a": 10.0, "not_in_truth": -5.0}
    assert kendall_tau(scores, truth) == pytest.approx(1.0)
    assert spearman_rho(scores, truth) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="both be"):
        kendall_tau(scores, [1, 2, 3])
    with pytest.raises(ValueError, match="different lengths"):
        kendall_tau([1, 2, 3], [1, 2])


def test_constant_scores_give_nan_correlation():
    assert math.isnan(kendall_tau([1, 1, 1, 1], [1, 2, 3, 4]))
    assert math.isnan(spearman_rho([1, 1, 1, 1], [1, 2, 3, 4]))


# --- top-k precision ---------------------------------------------------------------------

def test_top_k_precision_hand_cases():
    truth = list(range(10))
    assert top_k_precision(truth, truth, frac=0.2) == 1.0  # perfect
    assert top_k_precision(truth[::-1], truth, frac=0.2) == 0.0  # reversed
    # item 8 (true #2) drops to the bottom: predicted top-2 = items 9, 7 -> one of two found
    partial = list(range(10))
    partial[8] = -1
    assert top_k_precision(partial, truth, frac=0.2) == 0.5
    # frac 0.1 of 10 -> k = 1
    assert top_k_precision(truth, truth, frac=0.1) == 1.0
    assert top_k_precision([1, 2, 3, 4], [4, 3, 2, 1], k=3) == pytest.approx(2 / 3)


def test_top_k_precision_ties_get_fractional_share():
    # a constant proxy is at chance level k/n, whatever the input order
    assert top_k_precision([0.0] * 10, list(range(10)), frac=0.2) == pytest.approx(0.2)
    # items 1, 2, 3 tie for the last two slots of the predicted top-3, so each is in with
    # probability 2/3; the true top-3 is items 0, 1, 2 -> (1 + 2/3 + 2/3) / 3
    assert top_k_precision([9, 5, 5, 5, 0], [9, 8, 1, 0, -1], k=3) == pytest.approx(7 / 9)


def test_top_k_precision_rounds_k_half_up_and_checks_frac():
    # 10% of 45 = 4.5 -> k = 5: the 5 best must all be found for precision 1
    x = np.arange(45.0)
    assert top_k_precision(x, x, frac=0.1) == 1.0
    swapped = x.copy()
    swapped[[40, 39]] = swapped[[39, 40]]  # swap across the boundary of k = 5 (items 40..44)
    assert top_k_precision(swapped, x, frac=0.1) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="frac"):
        top_k_precision(x, x, frac=0.0)
    with pytest.raises(ValueError, match="k must be"):
        top_k_precision(x, x, k=46)


# --- NaN policy ----------------------------------------------------------------------------

def test_nan_policy_last_ranks_failures_below_everything():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    with_nan = [np.nan, 2.0, 3.0, 4.0, 5.0]
    # the failed item is the worst one, so ranking it last keeps tau = 1
    assert kendall_tau(with_nan, truth) == pytest.approx(1.0)
    # a failure on the *best* architecture must cost something, never be dropped silently
    failed_best = [1.0, 2.0, 3.0, 4.0, np.nan]
    tau = kendall_tau(failed_best, truth)
    assert tau == pytest.approx(stats.kendalltau([1, 2, 3, 4, -100], truth)[0])
    assert tau < 0.5
    # +inf is a failure too: it is not rewarded as "the best"
    assert kendall_tau([1.0, 2.0, 3.0, 4.0, np.inf], truth) == pytest.approx(tau)
    # all failures are tied together
    assert kendall_tau([np.nan, -np.inf, 3.0, 4.0, 5.0], truth) == pytest.approx(
        stats.kendalltau([0, 0, 3, 4, 5], truth)[0]
    )
    assert not math.isnan(spearman_rho(failed_best, truth))


def test_nan_policy_omit_and_raise():
    truth = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}
    scores = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": float("nan")}
    assert kendall_tau(scores, truth, nan_policy="omit") == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"non-finite score.*'e'"):
        kendall_tau(scores, truth, nan_policy="raise")
    with pytest.raises(ValueError, match="unknown nan_policy"):
        kendall_tau(scores, truth, nan_policy="ignore")
    with pytest.raises(ValueError, match="truth has 1 non-finite"):
        kendall_tau([1, 2, 3], [1, np.nan, 3])


# --- bootstrap -----------------------------------------------------------------------------

def _noisy(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y + rng.normal(scale=0.8, size=n), y


@pytest.mark.parametrize(
    "stat", [kendall_tau, spearman_rho, functools.partial(top_k_precision, frac=0.2)]
)
def test_bootstrap_ci_contains_estimate_and_is_seeded(stat):
    x, y = _noisy()
    ci = bootstrap_ci(stat, x, y, n_boot=300, seed=3)
    assert ci.estimate == pytest.approx(stat(x, y))
    assert ci.low <= ci.estimate <= ci.high
    assert ci.low < ci.high
    assert ci.n_valid == 300 and ci.level == 0.95
    again = bootstrap_ci(stat, x, y, n_boot=300, seed=3)
    assert again == ci
    if stat is not kendall_tau and stat is not spearman_rho:
        return  # top-k precision takes few distinct values: its quantiles may coincide
    assert bootstrap_ci(stat, x, y, n_boot=300, seed=4) != ci


@pytest.mark.parametrize(
    "stat", [kendall_tau, spearman_rho, functools.partial(top_k_precision, frac=0.2)]
)
def test_vectorised_bootstrap_equals_plain_loop(stat):
    # the numpy fast path must equal calling the statistic on each resample; a wrapper
    # hides the function identity and forces the plain loop
    x, y = _noisy(n=40, seed=1)
    x = np.round(x, 1)  # ties
    y = np.round(y, 1)
    fast = bootstrap_ci(stat, x, y, n_boot=200, seed=7)
    slow = bootstrap_ci(lambda a, b: stat(a, b), x, y, n_boot=200, seed=7)
    assert fast.estimate == pytest.approx(slow.estimate, abs=1e-12)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)


def test_weighted_kendall_matches_scipy_on_resamples(monkeypatch):
    rng = np.random.default_rng(2)
    n = 30
    x = rng.integers(0, 6, n).astype(float)
    y = x + rng.integers(0, 4, n)
    idx = rng.integers(0, n, (20, n))
    W = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
    ref = [stats.kendalltau(x[i], y[i])[0] for i in idx]
    np.testing.assert_allclose(C._kendall_weighted(x, y, W), ref, atol=1e-12)
    # the large-n path (one scipy call per resample) gives the same numbers
    monkeypatch.setattr(C, "_KENDALL_DENSE_MAX", 10)
    np.testing.assert_allclose(C._kendall_weighted(x, y, W), ref, atol=1e-12)


def test_bootstrap_ci_checks_arguments():
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(kendall_tau, [1, 2, 3], [1, 2, 3], level=1.5)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci(kendall_tau, [1], [1])


# --- correlate -----------------------------------------------------------------------------

def _synthetic(n=60, seed=0):
    rng = np.random.default_rng(seed)
    archs = [f"arch{i}" for i in range(n)]
    acc = rng.uniform(80, 95, size=n)
    truth = dict(zip(archs, acc.tolist()))
    scores = {
        "perfect": {a: 3 * v - 7 for a, v in truth.items()},
        "reversed": {a: -v for a, v in truth.items()},
        "noisy": {a: v + rng.normal(scale=3) for a, v in truth.items()},
    }
    return truth, scores


def test_correlate_on_synthetic_data(tmp_path):
    truth, scores = _synthetic()
    report = correlate(scores, truth, seconds={"perfect": 0.01}, n_boot=200, seed=0)
    p = report["perfect"]
    assert p.n == 60 and p.n_nonfinite == 0 and p.top_k == 6
    assert p.kendall_tau.estimate == pytest.approx(1.0)
    assert p.spearman_rho.estimate == pytest.approx(1.0)
    assert p.top_k_precision.estimate == pytest.approx(1.0)
    assert p.kendall_tau.low == pytest.approx(1.0)  # every resample is perfectly ranked
    assert p.seconds_per_arch == 0.01
    assert report["reversed"].kendall_tau.estimate == pytest.approx(-1.0)
    assert report["reversed"].top_k_precision.estimate == 0.0
    assert report["noisy"].seconds_per_arch is None
    assert [q.proxy for q in report.sorted()] == ["perfect", "noisy", "reversed"]

    table = report.table()
    lines = table.splitlines()
    assert lines[0].startswith("| proxy | n | Kendall tau")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["perfect", "noisy", "reversed"]

    out = tmp_path / "sub" / "report.json"
    text = report.to_json(out)
    loaded = json.loads(out.read_text())
    assert loaded == json.loads(text)
    assert loaded["proxies"][0]["kendall_tau"]["estimate"] == pytest.approx(1.0)
    assert [f.name for f in out.parent.iterdir()] == ["report.json"]  # no temp file left
    assert report.to_dict()["n_truth"] == 60


def test_correlate_uses_only_shared_architectures_and_counts_failures():
    truth, scores = _synthetic()
    partial = dict(list(scores["perfect"].items())[:30])
    partial["extra_arch"] = 1e9  # not in the truth: ignored
    failing = dict(scores["perfect"])
    best = max(truth, key=truth.get)
    failing[best] = float("nan")
    report = correlate({"partial": partial, "failing": failing}, truth, n_boot=50)
    assert report["partial"].n == 30
    assert report["partial"].kendall_tau.estimate == pytest.approx(1.0)
    f = report["failing"]
    assert f.n == 60 and f.n_nonfinite == 1
    assert f.kendall_tau.estimate < 1.0
    assert f.top_k_precision.estimate == pytest.approx(5 / 6)
    omitted = correlate({"failing": failing}, truth, n_boot=50, nan_policy="omit")
    assert omitted["failing"].n == 59
    assert omitted["failing"].kendall_tau.estimate == pytest.approx(1.0)
    # undefined statistics are strict-JSON null
    const = correlate({"const": {a: 0.0 for a in truth}}, truth, n_boot=20)
    assert json.loads(const.to_json())["proxies"][0]["kendall_tau"]["estimate"] is None
    assert "n/a" in const.table()


def test_correlate_errors_on_empty_or_tiny_overlap():
    truth, scores = _synthetic()
    with pytest.raises(ValueError, match=r"proxy 'x': only 0 architecture"):
        correlate({"x": {"other": 1.0}}, truth)
    few = dict(list(scores["perfect"].items())[:3])
    with pytest.raises(ValueError, match="only 3 architecture"):
        correlate({"few": few}, truth)
    with pytest.raises(ValueError, match="unknown proxies"):
        correlate(scores, truth, seconds={"nope": 1.0}, n_boot=10)
    with pytest.raises(ValueError, match="non-empty"):
        correlate({}, truth)


# --- reading ground truth --------------------------------------------------------------------

def test_read_truth_basic_and_column_mapping(tmp_path):
    p = _write(tmp_path, f"arch,test_acc\n{ARCH_A},91.5\n\n{ARCH_B}, 90.25 \n{ARCH_A},91.5\n")
    assert read_truth(p) == {ARCH_A: 91.5, ARCH_B: 90.25}  # exact repeat merged
    q = _write(tmp_path, "net,top1,other\nx,70,1\ny,71,2\n", "other.csv")
    assert read_truth(q, arch_col="net", acc_col="top1") == {"x": 70.0, "y": 71.0}


def test_read_truth_missing_column(tmp_path):
    p = _write(tmp_path, "arch,valid_acc\nx,1\n")
    with pytest.raises(ValueError, match=r"missing column.*'test_acc'.*columns \['arch', 'valid_acc'\]"):
        read_truth(p)


def test_read_truth_non_numeric_accuracy(tmp_path):
    p = _write(tmp_path, "arch,test_acc\nx,91\ny,ninety\n")
    with pytest.raises(ValueError, match=r"truth.csv, line 3, column 'test_acc': bad value 'ninety'"):
        read_truth(p)


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", ""])
def test_read_truth_non_finite_accuracy(tmp_path, bad):
    p = _write(tmp_path, f"arch,test_acc\nx,91\ny,{bad}\n")
    with pytest.raises(ValueError, match=r"line 3, column 'test_acc': bad value"):
        read_truth(p)


def test_read_truth_empty_files(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        read_truth(_write(tmp_path, ""))
    with pytest.raises(ValueError, match="no data rows"):
        read_truth(_write(tmp_path, "arch,test_acc\n", "header_only.csv"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_truth(tmp_path / "absent.csv")


def test_read_truth_duplicate_conflict(tmp_path):
    p = _write(tmp_path, "arch,test_acc\nx,91\ny,90\nx,92\n")
    with pytest.raises(ValueError, match=r"line 4: architecture 'x' is listed again.*line 2 gave 91"):
        read_truth(p)


def test_read_truth_ragged_row(tmp_path):
    p = _write(tmp_path, "arch,test_acc\nx,91,extra\n")
    with pytest.raises(ValueError, match="line 2: expected 2 fields"):
        read_truth(p)


def test_read_truth_decode_errors_name_file_and_line(tmp_path):
    """Issue 12: a non-UTF-8 byte gave a UnicodeDecodeError naming neither file nor line."""
    p = tmp_path / "latin1.csv"
    p.write_bytes(b"arch,test_acc\nx,91\ny\xe9,90\n")
    with pytest.raises(ValueError, match=r"latin1.csv, line 3: byte b'\\xe9' is not UTF-8"):
        read_truth(p)
    with pytest.raises(ValueError, match=r"latin1.csv, line 3"):
        read_proxy_columns(p)
    # a BOM is fine; a field beyond csv's size limit is a one-line error too
    q = tmp_path / "bom.csv"
    q.write_bytes("\ufeffarch,test_acc\nx,91\n".encode("utf-8"))
    assert read_truth(q) == {"x": 91.0}
    big = _write(tmp_path, "arch,test_acc\nx,91\n\"" + "y" * 200_000 + "\",90\n", "big.csv")
    with pytest.raises(ValueError, match=r"big.csv, line 3: not readable as CSV"):
        read_truth(big)
    long_bad = _write(tmp_path, "arch,test_acc\nx,91\ny," + "9" * 5000 + "z\n", "long.csv")
    with pytest.raises(ValueError, match=r"line 3, column 'test_acc': bad value '9999") as err:
        read_truth(long_bad)
    assert len(str(err.value)) < 400


def test_read_truth_validates_against_space(tmp_path):
    import search_spaces

    bad = ARCH_A.replace("avg_pool_3x3", "conv_9x9")
    p = _write(tmp_path, f"arch,test_acc\n{ARCH_A},91\n{bad},90\n")
    with pytest.raises(ValueError, match=r"line 3, column 'arch': .*conv_9x9.* not a valid nb201"):
        read_truth(p, space="nb201")
    # a space object works too, and valid files pass
    ok = _write(tmp_path, f"arch,test_acc\n{ARCH_A},91\n{ARCH_B},90\n", "ok.csv")
    assert read_truth(ok, space=search_spaces.get("nb201")) == {ARCH_A: 91.0, ARCH_B: 90.0}
    with pytest.raises(TypeError, match="space must be"):
        read_truth(ok, space=42)


def test_read_proxy_columns(tmp_path):
    p = _write(tmp_path, "arch,test_acc,naslib_a,naslib_b\nx,1,0.5,\ny,2,nan,3\n")
    got = read_proxy_columns(p)
    assert set(got) == {"a", "b"}
    assert got["a"]["x"] == 0.5 and math.isnan(got["a"]["y"])
    assert math.isnan(got["b"]["x"]) and got["b"]["y"] == 3.0
    with pytest.raises(ValueError, match="no column starts with 'zz_'"):
        read_proxy_columns(p, prefix="zz_")
    bad = _write(tmp_path, "arch,naslib_a\nx,oops\n", "bad.csv")
    with pytest.raises(ValueError, match=r"line 2, column 'naslib_a': bad value 'oops'"):
        read_proxy_columns(bad)


# --- the real NAS-Bench-201 development file ------------------------------------------------

def test_real_nb201_file(nb201_csv, tmp_path):
    truth = read_truth(nb201_csv)
    assert len(truth) == 491
    assert all(0 < v < 100 for v in truth.values())
    ref = read_proxy_columns(nb201_csv)
    assert {"synflow", "jacov", "snip", "params", "flops"} <= set(ref)
    syn = ref["synflow"]
    # reference values from the data README: synflow 0.58 / 0.78
    assert kendall_tau(syn, truth) == pytest.approx(0.58, abs=0.01)
    assert spearman_rho(syn, truth) == pytest.approx(0.78, abs=0.01)
    report = correlate({"synflow": syn, "jacov": ref["jacov"]}, truth, n_boot=200)
    assert report["synflow"].n == 491
    assert report["synflow"].kendall_tau.low < 0.58 < report["synflow"].kendall_tau.high
    assert report["jacov"].kendall_tau.estimate == pytest.approx(0.55, abs=0.01)

    paths = scatter_plots({"synflow": syn}, truth, tmp_path / "plots")
    assert paths == [tmp_path / "plots" / "synflow.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_nb201_file_validates_in_space(nb201_csv):
    assert len(read_truth(nb201_csv, space="nb201")) == 491


# --- plots ------------------------------------------------------------------------------------

def test_scatter_plots_grid_and_per_proxy(tmp_path):
    truth, scores = _synthetic(n=30)
    scores["noisy"]["arch0"] = float("nan")
    grid = scatter_plots(scores, truth, tmp_path / "grid.png")
    assert grid == [tmp_path / "grid.png"] and grid[0].stat().st_size > 1000
    per = scatter_plots({"a/b c": scores["perfect"], "noisy": scores["noisy"]}, truth, tmp_path / "each")
    assert [p.name for p in per] == ["a_b_c.png", "noisy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in per)
    assert sorted(f.name for f in (tmp_path / "each").iterdir()) == ["a_b_c.png", "noisy.png"]
    ranked = scatter_plots(scores, truth, tmp_path / "ranked.png", x_axis="rank")
    assert ranked[0].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="at least one proxy"):
        scatter_plots({}, truth, tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown x_axis"):
        scatter_plots(scores, truth, tmp_path / "x.png", x_axis="log")
