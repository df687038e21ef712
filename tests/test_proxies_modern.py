"""The post-2021 proxies (MeCo, ZiCo, SWAP, AZ-NAS, TE-NAS, Zen) and NAS-Bench-Suite-Zero's
l2_norm / plain / epe_nas: finite, deterministic, model untouched, clear errors, values
checked against independent hand computations, and rank agreement with NASLib."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import search_spaces
from ghnas.proxies import get_proxy, rank_aggregate, score
from ghnas.proxies._common import count_distinct_rows
from ghnas.proxies.az_nas import block_trainability, feature_entropy, log_rank_aggregate
from ghnas.proxies.epe_nas import epe_nas_score
from ghnas.proxies.meco import min_eig_corr
from ghnas.proxies.te_nas import ntk_condition_number
from ghnas.proxies.zico import zico_from_grads

from conftest import SHARED, _need

MODERN = ["l2_norm", "plain", "epe_nas", "meco", "zico", "swap", "az_expressivity", "az_progressivity",
          "az_trainability", "az_complexity", "ntk_cond", "linear_regions", "zen"]
# settings that keep the tiny tests fast (the authors' defaults repeat 32 times)
FAST = {"swap": {"repeats": 2}, "zen": {"repeats": 2, "batch_size": 4},
        "az_expressivity": {"batch_size": 4}, "az_progressivity": {"batch_size": 4},
        "az_trainability": {"batch_size": 4}}
A1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
A2 = "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
A3 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_1x1~2|"
TINY = {"C": 4, "N": 1}
NB301_CSV = SHARED / "data" / "nb301" / "cifar10_dev.csv"


def tiny_net(arch: str = A1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return search_spaces.get("nb201").build(arch, **TINY)


def tiny_batch(n: int = 8, hw: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, hw, hw, generator=g), torch.arange(n) % 3)]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def proxy(name: str):
    return get_proxy(name, **FAST.get(name, {}))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", MODERN)
def test_finite_deterministic_and_model_untouched(name):
    net = tiny_net()
    net.eval()
    before = state(net)
    batches = tiny_batch()
    v1 = proxy(name).score(net, batches)
    v2 = proxy(name).score(net, batches)
    assert math.isfinite(v1), (name, v1)
    assert v1 == v2, name
    after = state(net)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), name
    assert not net.training, f"{name} changed the model's train/eval mode"
    assert all(p.grad is None for p in net.parameters()), f"{name} left gradients on the model"


@pytest.mark.parametrize("name", MODERN)
def test_score_is_independent_of_global_rng(name):
    net, batches = tiny_net(), tiny_batch()
    torch.manual_seed(1)
    v1 = proxy(name).score(net, batches)
    torch.manual_seed(2)
    v2 = proxy(name).score(net, batches)
    assert v1 == v2


def test_seeded_proxies_change_with_their_seed():
    net, batches = tiny_net(), tiny_batch()
    for name in ("zen", "az_expressivity", "az_trainability"):
        kw = FAST.get(name, {})
        assert get_proxy(name, seed=0, **kw).score(net, batches) != get_proxy(name, seed=1, **kw).score(net, batches)


def test_all_registered_and_scored_through_score():
    archs = [A1, A2, A3]
    for name in MODERN + ["az_nas", "te_nas"]:
        p = get_proxy(name, **FAST.get(name, {})) if name in FAST else name
        t = score(archs, "nb201", p, data=tiny_batch(), build_kwargs=TINY, progress=False, device="cpu")
        assert len(t.scores) == 3 and all(not math.isnan(v) for v in t.scores), name


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name,match", [
    ("meco", "no convolution"), ("swap", "nn.ReLU"), ("linear_regions", "nn.ReLU"),
    ("az_expressivity", r"\.stem"), ("az_trainability", r"\.cells"), ("zen", "AdaptiveAvgPool2d"),
])
def test_clear_error_for_models_it_cannot_score(name, match):
    with pytest.raises(ValueError, match=match):
        proxy(name).score(_MLP(), tiny_batch())


def test_clear_errors_for_bad_settings_and_data():
    with pytest.raises(ValueError, match="n_batches"):
        get_proxy("zico", n_batches=1)
    with pytest.raises(ValueError, match="at least 4 images"):
        get_proxy("zico").score(tiny_net(), tiny_batch(n=3))
    with pytest.raises(ValueError, match="mu and sigma"):
        get_proxy("swap", mu=1.0)
    with pytest.raises(ValueError, match="integer class label"):
        x, _ = tiny_batch()[0]
        get_proxy("epe_nas").score(tiny_net(), [(x, torch.rand(8))])
    with pytest.raises(ValueError, match="needs data"):
        get_proxy("meco").score(tiny_net(), None)


# ----------------------------------------------------------------------------- hand checks


def test_l2_norm_is_the_sum_of_layer_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    w1 = net[0].weight.detach().numpy().ravel()
    w2 = net[3].weight.detach().numpy().ravel()
    expected = math.sqrt(float(np.sum(w1 ** 2))) + math.sqrt(float(np.sum(w2 ** 2)))
    assert get_proxy("l2_norm").score(net, None) == pytest.approx(expected, rel=1e-6)


def test_plain_matches_the_closed_form_gradient_of_a_linear_softmax():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, bias=False))
    x, y = torch.randn(5, 3, 2, 2), torch.tensor([0, 1, 2, 1, 0])
    W = net[1].weight.detach().double().numpy()
    X = x.reshape(5, -1).double().numpy()
    logits = X @ W.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y.numpy()]).T @ X / 5  # d mean-CE / dW
    assert get_proxy("plain").score(net, [(x, y)]) == pytest.approx(float(np.sum(W * grad)), rel=1e-5)


def test_epe_nas_formula_by_hand():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(5, 4))
    labels = np.array([0, 0, 1, 1, 2])
    expected = 0.0
    for c in (0, 1):
        rows = jac[labels == c]
        r = float(np.dot(rows[0] - rows[0].mean(), rows[1] - rows[1].mean())
                  / (np.linalg.norm(rows[0] - rows[0].mean()) * np.linalg.norm(rows[1] - rows[1].mean())))
        expected += abs(2 * math.log(1 + 1e-5) + 2 * math.log(abs(r) + 1e-5))
    expected += abs(math.log(1 + 1e-5))  # a class with one image: a 1x1 correlation of 1
    assert epe_nas_score(jac, labels) == pytest.approx(expected, rel=1e-12)


def test_epe_nas_of_a_constant_jacobian_is_nan():
    assert math.isnan(epe_nas_score(np.ones((4, 3)), np.array([0, 0, 1, 1])))


def test_meco_min_eigenvalue_of_two_channels_is_one_minus_abs_correlation():
    a = torch.tensor([1.0, 2.0, 3.0, 5.0])
    b = torch.tensor([2.0, 1.0, 4.0, 4.0])
    r = float(np.corrcoef(a.numpy(), b.numpy())[0, 1])
    assert min_eig_corr(torch.stack([a, b])) == pytest.approx(1 - abs(r), abs=1e-12)
    # a constant channel has undefined correlations, set to 0: eigenvalues {1, 0}
    assert min_eig_corr(torch.stack([a, torch.ones(4)])) == pytest.approx(0.0, abs=1e-12)


def test_meco_sums_over_modules_on_the_first_image():
    # one conv module (and the Sequential around it, which reports the same output)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False))
    x = torch.randn(3, 3, 4, 4)
    out = net(x)[0].reshape(2, -1)
    assert get_proxy("meco").score(net, [(x, torch.zeros(3, dtype=torch.long))]) == \
        pytest.approx(2 * min_eig_corr(out), rel=1e-9)


def test_zico_formula_by_hand():
    g1 = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])  # columns: std 1, 0, 0
    g2 = torch.tensor([[1.0, -1.0], [2.0, 1.0]])           # std 0.5, 1
    expected = math.log(2.0 / 1.0) + math.log(1.5 / 0.5 + 1.0 / 1.0)
    assert zico_from_grads([g1, g2]) == pytest.approx(expected, rel=1e-12)


def test_count_distinct_rows_matches_a_set_of_tuples():
    g = torch.Generator().manual_seed(0)
    for rows, cols in ((30, 3), (40, 60), (25, 120), (1, 5)):
        bits = torch.rand(rows, cols, generator=g) > 0.6
        bits = torch.cat([bits, bits[: rows // 2]])
        assert count_distinct_rows(bits) == len({tuple(r) for r in bits.tolist()})


class _ReLUOfInput(nn.Module):
    """ReLU of the input image itself (an identity 1x1 conv), then a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_swap_counts_distinct_unit_patterns_by_hand():
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    units = (x > 0).reshape(4, -1).T.tolist()  # each unit's pattern over the 4 samples
    value = get_proxy("swap", gaussian_init=False).score(_ReLUOfInput(), [(x, torch.zeros(4, dtype=torch.long))])
    assert value == len({tuple(u) for u in units})


def test_swap_regulariser():
    net = _ReLUOfInput()
    k = sum(p.numel() for p in net.parameters()) / 1e3
    p = get_proxy("swap", gaussian_init=False, mu=0.01, sigma=0.02)
    assert p.regular_factor(net) == pytest.approx(math.exp(-((k - 0.01) ** 2) / 0.02))


def test_linear_regions_count_distinct_sample_patterns_by_hand():
    x = torch.randn(6, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, x[:2]])  # two repeated images fall in the same regions
    samples = (x > 0).reshape(8, -1).tolist()
    value = get_proxy("linear_regions", patch=None).score(_ReLUOfInput(), [(x, torch.zeros(8, dtype=torch.long))])
    assert value == len({tuple(s) for s in samples})


def test_linear_regions_inputs_are_seeded_one_channel_crops():
    from ghnas.proxies.te_nas import random_patches

    x = torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    crops = random_patches(x, 3, one_channel=True, seed=1)
    assert crops.shape == (5, 3, 3, 3)
    assert torch.equal(crops, random_patches(x, 3, one_channel=True, seed=1))
    assert not torch.equal(crops, random_patches(x, 3, one_channel=True, seed=2))
    for img, crop in zip(x, crops):
        assert torch.equal(crop[0], crop[1]) and torch.equal(crop[0], crop[2])  # one channel, repeated
        windows = img.unfold(1, 3, 1).unfold(2, 3, 1)  # (channel, top, left, 3, 3)
        assert any(torch.equal(windows[c, i, j], crop[0])
                   for c in range(3) for i in range(4) for j in range(4))
    colour = random_patches(x, 3, one_channel=False, seed=1)
    assert any(not torch.equal(c[0], c[1]) for c in colour)
    with pytest.raises(ValueError, match="larger than"):
        random_patches(x, 7, True, 0)


def test_linear_regions_takes_the_crop_size_darts_networks_accept():
    darts = search_spaces.get("darts")
    arch = darts.sample(0)
    torch.manual_seed(0)
    net = darts.build(arch, C=1, layers=2)
    batch = tiny_batch(n=16)
    assert get_proxy("linear_regions", space="darts").patch == 4
    assert get_proxy("te_nas", space="darts").member_settings["linear_regions"]["patch"] == 4
    assert get_proxy("linear_regions", space="nb201").patch == 3
    assert get_proxy("linear_regions", patch=None, space="darts").patch is None  # explicit: kept
    assert 1 <= get_proxy("linear_regions", space="darts").score(net, batch) <= 16
    with pytest.raises(ValueError, match="even size"):
        get_proxy("linear_regions").score(net, batch)  # 3x3 crops: DARTS's reductions fail
    with pytest.raises(ValueError, match="patch must be"):
        get_proxy("linear_regions", patch=0)


def test_ntk_condition_number_of_a_linear_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 1, bias=False))
    x = torch.randn(4, 3, 2, 2)
    X = x.reshape(4, -1).double().numpy()
    eig = np.linalg.eigvalsh(X @ X.T)  # J[i] = x_i for f(x) = w.x
    value = get_proxy("ntk_cond").score(net, [(x, torch.zeros(4, dtype=torch.long))])
    assert value == pytest.approx(eig[-1] / eig[0], rel=1e-6)
    assert math.isnan(ntk_condition_number(torch.ones(3, 5)))  # rank 1: singular kernel


def test_az_entropy_of_one_hot_features_is_log_c_minus_one():
    c = 5
    # pixels are the c one-hot vectors, repeated: covariance (I/c - 11^T/c^2), eigenvalues 1/c (c-1 times), 0
    feat = torch.eye(c).repeat(4, 1).T.reshape(1, c, 4, c)
    assert feature_entropy(feat) == pytest.approx(math.log(c - 1), abs=1e-6)


def test_az_trainability_of_identity_and_scaling_blocks():
    torch.manual_seed(0)
    f_in = torch.randn(2, 1, 4, 4, requires_grad=True)
    assert block_trainability(f_in, f_in * 1.0) == -math.inf  # identity: the reference's -inf
    # one channel, f_out = 2 f_in: the Jacobian's spectral norm is exactly 2
    assert block_trainability(f_in, 2.0 * f_in) == pytest.approx(-2 - 1 / (2 + 1e-6) + 2, abs=1e-9)
    # a down-sampling block: pixel-unshuffle aligns the input gradient with the output
    down = F.avg_pool2d(f_in, 2) * 4.0  # J^T g spreads g over each 2x2 window
    assert math.isfinite(block_trainability(f_in, down))


def test_az_progressivity_and_expressivity_agree_with_entropies():
    from ghnas.proxies.az_nas import az_statistics

    net = tiny_net()
    s = az_statistics(net, batch_size=4, batches=tiny_batch())
    assert set(s) == {"expressivity", "progressivity", "trainability"}
    assert s["progressivity"] <= s["expressivity"]  # a min of differences of positive entropies


def test_az_forward_only_statistics_equal_the_full_pass():
    """Expressivity / progressivity alone skip autograd; they must not change a value."""
    from ghnas.proxies import az_nas

    net = search_spaces.get("darts").build(search_spaces.get("darts").sample(1), C=4, layers=3)
    az_nas._MEMO.clear()
    fwd = az_nas.az_statistics(net, batch_size=4, need=("progressivity",))
    assert set(fwd) == {"expressivity", "progressivity"}
    az_nas._MEMO.clear()
    full = az_nas.az_statistics(net, batch_size=4)
    assert fwd["progressivity"] == full["progressivity"] and fwd["expressivity"] == full["expressivity"]
    # a partial memo entry is completed, not served, when trainability is asked for
    az_nas._MEMO.clear()
    az_nas.az_statistics(net, batch_size=4, need=("expressivity",))
    assert az_nas.az_statistics(net, batch_size=4) == full
    with pytest.raises(ValueError, match="unknown AZ-NAS statistic"):
        az_nas.az_statistics(net, need=("nope",))


def test_log_rank_aggregate_by_hand():
    cols = [[3.0, 1.0, 2.0], [10.0, 30.0, 20.0]]
    # ranks (1 = worst): [3, 1, 2] and [1, 3, 2] (second column lower is better -> [3, 1, 2])
    out = log_rank_aggregate(cols, [True, False])
    assert out == pytest.approx([2 * math.log(3 / 3), 2 * math.log(1 / 3), 2 * math.log(2 / 3)])


def test_az_nas_and_te_nas_aggregate_their_members_over_the_set(monkeypatch):
    from ghnas.proxies import az_nas

    archs = [A1, A2, A3]
    common = dict(data=tiny_batch(), build_kwargs=TINY, progress=False, device="cpu")
    passes = []
    init = az_nas.kaiming_fan_in_init
    monkeypatch.setattr(az_nas, "kaiming_fan_in_init", lambda net: passes.append(1) or init(net))
    az_nas._MEMO.clear()
    az = score(archs, "nb201", "az_nas", **common)
    assert az.proxy == "az_nas"
    assert len(passes) == len(archs)  # one evaluation per architecture for all three statistics
    members = [score(archs, "nb201", m, **common).scores
               for m in ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")]
    assert az.scores == pytest.approx(log_rank_aggregate(members, [True] * 4))
    te = score(archs, "nb201", "te_nas", **common)
    ntk = score(archs, "nb201", "ntk_cond", **common).scores
    lr = score(archs, "nb201", "linear_regions", **common).scores
    assert te.scores == pytest.approx(rank_aggregate([ntk, lr], [False, True]))


def test_zen_grows_with_the_input_gain():
    # a network that doubles its input has pre-pooling differences twice as large: +log 2
    class Gain(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)
            self.g = g
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.pool(self.g * self.conv(x)).flatten(1)

    a = get_proxy("zen", repeats=2, batch_size=4).score(Gain(1.0), tiny_batch())
    b = get_proxy("zen", repeats=2, batch_size=4).score(Gain(2.0), tiny_batch())
    assert b - a == pytest.approx(math.log(2.0), abs=1e-6)


def test_degenerate_network_ranks_last():
    dead = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    for name in ("meco", "zico", "swap", "az_nas", "linear_regions", "zen", "epe_nas"):
        p = get_proxy(name, **FAST.get(name, {})) if name in FAST else name
        t = score([A1, dead], "nb201", p, data=tiny_batch(), build_kwargs=TINY, progress=False, device="cpu")
        good, bad = t.scores
        assert (good > bad) if t.higher_is_better else (good < bad), (name, t.scores)


# ----------------------------------------------------------------------------- NASLib agreement


def _dev_rows(path, n, arch_col="arch"):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[: 2 * n: 2]  # tuning-half rows


def test_l2_norm_agrees_with_naslib(nb201_csv):
    from ghnas.correlation import spearman_rho

    rows = _dev_rows(nb201_csv, 20)
    ours = score([r["arch"] for r in rows], "nb201", "l2_norm", build_kwargs={"C": 16, "N": 5},
                 progress=False, device="cpu").scores
    assert spearman_rho(ours, [float(r["naslib_l2_norm"]) for r in rows]) >= 0.9


@pytest.mark.slow
def test_epe_nas_agrees_with_naslib(nb201_csv, cifar10_root):
    # (plain is not checked here: two of our own runs with different seeds agree only to
    # rho ~ 0.37 on these 20 architectures, so NASLib's single draw cannot be matched;
    # benchmarks/results/proxies_nb201 reports its agreement on all 491)
    from ghnas import data as gdata
    from ghnas.correlation import spearman_rho

    rows = _dev_rows(nb201_csv, 20)
    train = gdata.load("cifar10", root=cifar10_root, split="train")
    batch = [next(train.batches(32, shuffle=True, seed=0))]
    for name, bound in (("epe_nas", 0.7),):
        ours = score([r["arch"] for r in rows], "nb201", name, data=batch, build_kwargs={"C": 16, "N": 5},
                     progress=False, device="cpu").scores
        assert spearman_rho(ours, [float(r[f"naslib_{name}"]) for r in rows]) >= bound, name


def test_l2_norm_agrees_with_naslib_on_darts():
    from ghnas.correlation import spearman_rho

    rows = _dev_rows(_need(NB301_CSV), 10)
    ours = score([r["genotype"] for r in rows], "darts", "l2_norm", build_kwargs={"C": 16, "layers": 8},
                 progress=False, device="cpu").scores
    assert spearman_rho(ours, [float(r["naslib_l2_norm"]) for r in rows]) >= 0.8


def test_correlate_reads_the_nb301_dev_file_without_column_names(tmp_path):
    from ghnas.correlation import read_truth, truth_columns

    path = _need(NB301_CSV)
    assert truth_columns(path) == ("genotype", "val_acc")
    truth = read_truth(path, None, None)
    assert len(truth) == 718
    bad = tmp_path / "t.csv"
    bad.write_text("name,score\nx,1\n")
    with pytest.raises(ValueError, match="no architecture column"):
        truth_columns(bad)
