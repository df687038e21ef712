"""ghnas.warm_start and the warm-start benchmark's core."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

import ghnas
import search_spaces
from ghnas.data import ImageData
from ghnas.ghn import GHN2, save_ghn
from ghnas.graph import extract
from ghnas.warm import calibrate_batchnorm, decorrelate_weights, match_init_norms, reset_batchnorm, warm_start

pytestmark = pytest.mark.filterwarnings("ignore:the GHN's shape encoding has no entry", "ignore:.*not used by the forward")

# node 1 feeds only `none` edges, so the conv on edge 0->1 never reaches the output: its
# parameters get no graph node and no prediction
DEAD = "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|nor_conv_1x1~2|"
LIVE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"




@pytest.fixture(scope="module")
def ghn():
    torch.manual_seed(0)
    return GHN2(hid=16, max_shape=(16, 16, 3, 3)).eval()


def build(arch=LIVE, **kw):
    torch.manual_seed(1)
    return search_spaces.get("nb201").build(arch, C=4, N=1, **kw)


def images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.arange(n) % 10, [str(i) for i in range(10)])


def bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("arch", [LIVE, DEAD])
def test_parameters_equal_the_ghn_prediction(ghn, arch):
    init = {k: v.clone() for k, v in build(arch).named_parameters()}
    model = warm_start(build(arch), ghn)  # the default keeps the predicted norms
    pred = ghn.predict([extract(build(arch))])[0]
    params = dict(model.named_parameters())
    assert pred, "nothing predicted"
    for k, v in pred.items():
        torch.testing.assert_close(params[k].detach(), v)
    dead = [k for k in params if k not in pred]
    assert bool(dead) == (arch == DEAD)
    for k in dead:  # unused by the forward pass: left at their initial values
        torch.testing.assert_close(params[k].detach(), init[k])


def _batch_stat_logits(model, x):
    model.eval()
    for m in bns(model):
        m.train()
    with torch.no_grad():
        return model(x)


def test_matched_norms_keep_the_function_and_restore_the_initial_norms(ghn):
    init = {k: float(v.norm()) for k, v in build().named_parameters()}
    plain = warm_start(build(), ghn, match_norms=False)
    matched = warm_start(build(), ghn, match_norms=True)
    pp, pm = dict(plain.named_parameters()), dict(matched.named_parameters())
    rescaled = [k for k in pp if not torch.equal(pp[k], pm[k])]
    # the cells' convolutions all feed batch norm; the classifier and 1-d parameters do not
    assert rescaled and all(pp[k].dim() == 4 for k in rescaled)
    assert "classifier.weight" not in rescaled and any(k.startswith("cells.") for k in rescaled)
    for k in rescaled:
        assert float(pm[k].norm()) == pytest.approx(init[k], rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(pp[k].flatten(), pm[k].flatten(), dim=0)
        assert float(cos) == pytest.approx(1.0, abs=1e-5)  # same direction: a positive rescaling
    assert matched.training  # modes were restored after the probing forward passes
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_batch_stat_logits(matched, x), _batch_stat_logits(plain, x), rtol=5e-3, atol=5e-3)


class _Residual(nn.Module):
    """x + conv_a(x) with no batch norm on the branch, then conv_b -> BN -> classifier."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.conv_b = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = self.bn(self.conv_b(x + self.conv_a(x))).relu()
        return self.fc(h.mean((2, 3)))


def test_only_weights_the_output_does_not_depend_on_are_rescaled():
    torch.manual_seed(0)
    net = _Residual()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(5.0)  # "predicted": five times the initial norms
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    target = {k: float(v.norm()) / 5.0 for k, v in before.items()}
    done = match_init_norms(net, target)
    assert done == ["conv_b.weight"]  # conv_a feeds a residual sum, fc is the classifier
    assert float(net.conv_b.weight.norm()) == pytest.approx(target["conv_b.weight"], rel=1e-5)
    for k in ("conv_a.weight", "fc.weight", "bn.weight"):
        assert torch.equal(dict(net.named_parameters())[k], before[k])
    for k, v in net.named_buffers():  # probing passes left the running statistics alone
        assert torch.equal(v, buffers[k])


def _rows(w):
    m = w.detach().reshape(w.shape[0], -1).double()
    return m if m.shape[0] >= m.shape[1] else m.t()


def test_orthogonalized_weights_are_orthonormal_and_keep_the_first_filter_direction(ghn):
    plain = warm_start(build(), ghn)
    orth = warm_start(build(), ghn, orthogonalize=True)
    pp, po = dict(plain.named_parameters()), dict(orth.named_parameters())
    multi = [k for k, v in pp.items() if v.dim() >= 2]
    changed = [k for k in multi if not torch.equal(pp[k], po[k])]
    assert "classifier.weight" not in changed  # the classifier keeps its prediction
    assert set(changed) == set(multi) - {"classifier.weight"}
    for k in changed:
        q = _rows(po[k])
        torch.testing.assert_close(q.t() @ q, torch.eye(q.shape[1], dtype=q.dtype), atol=1e-5, rtol=0)
        # QR keeps the span's first direction: column 0 of the tall matrix, sign included
        a = _rows(pp[k])[:, 0]
        cos = torch.dot(a, q[:, 0]) / a.norm()
        assert float(cos) == pytest.approx(1.0, abs=1e-5)
    for k, v in pp.items():  # 1-d parameters are untouched without noise
        if v.dim() < 2:
            assert torch.equal(v, po[k])


def test_noise_scales_with_filter_correlation_and_is_seeded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(1, 3, 8, 8))
    with torch.no_grad():  # identical filters: correlation 1 everywhere, spread 0, so no noise
        net[0].weight.copy_(net[0].weight[:1].expand_as(net[0].weight))
    assert decorrelate_weights(net, orthogonalize=False, noise=1.0) == []
    with torch.no_grad():
        net[0].weight.normal_()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    changed = decorrelate_weights(net, orthogonalize=False, noise=0.5, seed=3)
    assert changed == ["0.weight", "1.weight", "1.bias"]  # conv, then the norm layer after it
    assert torch.equal(net[3].weight, before["3.weight"])  # the classifier is never touched
    delta = {k: dict(net.named_parameters())[k].detach() - before[k] for k in changed}
    with torch.no_grad():  # back to the weights before the noise, then the same seed again
        for k, v in net.named_parameters():
            v.copy_(before[k])
    assert decorrelate_weights(net, orthogonalize=False, noise=0.5, seed=3) == changed
    for k in changed:  # the same seed gives the same noise
        torch.testing.assert_close(dict(net.named_parameters())[k].detach() - before[k], delta[k])
    c = torch.corrcoef(before["0.weight"].reshape(8, -1).double())
    assert float(delta["0.weight"].std()) == pytest.approx(0.5 * float(c.std()), rel=0.25)


def test_bad_noise_is_refused_before_the_model_changes(ghn):
    model = build()
    init = {k: v.clone() for k, v in model.named_parameters()}
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="noise"):
            warm_start(model, ghn, noise=bad)
    for k, v in model.named_parameters():
        assert torch.equal(v, init[k])


def test_model_is_left_trainable(ghn):
    model = warm_start(build(), ghn)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    for m in bns(model):
        assert m.training and m.track_running_stats
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m.running_var, torch.ones_like(m.running_var))
    # one SGD step changes the parameters and updates the running statistics
    data = images()
    x, y = next(data.batches(16))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())
    assert any(m.num_batches_tracked.item() == 1 for m in bns(model))
    model.eval()
    assert torch.isfinite(model(x)).all()


def test_undoes_ppuda_batch_statistics_mode(ghn):
    model = build()
    ghn(model)  # ppuda's convention: batch statistics (LIVE has no dead ops, which ghn() rejects)
    assert all(not m.track_running_stats for m in bns(model))
    warm_start(model, ghn)
    assert all(m.track_running_stats for m in bns(model))


def test_batchnorm_without_buffers_gets_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert model[1].running_mean is None
    assert reset_batchnorm(model) == 1
    assert model[1].track_running_stats and torch.equal(model[1].running_var, torch.ones(4))
    model(torch.randn(2, 3, 8, 8))
    assert model[1].num_batches_tracked.item() == 1


def test_calibration_estimates_running_stats(ghn):
    data = images(64)
    model = warm_start(build(), ghn, data=data, calib_batches=2, batch_size=16)
    for m in bns(model):
        assert m.momentum == 0.1 and m.num_batches_tracked.item() == 2
    assert any(not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns(model))
    # calibrated eval-mode output is close to the batch-statistics output on a big batch
    x, _ = next(data.batches(64))
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert torch.isfinite(out_eval).all()
    # the exact average over the two batches equals what one pass over their union gives for the mean
    twice = build()
    warm_start(twice, ghn)
    calibrate_batchnorm(twice, [(x[:32], None), (x[32:], None)], batches=2)
    one = build()
    warm_start(one, ghn)
    calibrate_batchnorm(one, [(x, None)], batches=1)
    torch.testing.assert_close(bns(twice)[0].running_mean, bns(one)[0].running_mean)
    assert twice.training and one.training


def test_accepts_a_path_and_rejects_bad_ghns(ghn, tmp_path):
    p = save_ghn(ghn, tmp_path / "g.pt")
    a = dict(warm_start(build(), str(p)).named_parameters())
    b = dict(ghnas.warm_start(build(), ghn).named_parameters())
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    with pytest.raises(TypeError, match="GHN"):
        warm_start(build(), 3)
    with pytest.raises(FileNotFoundError):
        warm_start(build(), tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="classes"):
        warm_start(build(num_classes=5), ghn)


def test_non_finite_ghns_and_predictions_never_reach_the_model(ghn, tmp_path):
    """Issue 12: a GHN with NaN weights gave a network whose parameters were all NaN."""
    import copy

    from ghnas.integrations import warm_start as integration_warm_start

    bad = copy.deepcopy(ghn)
    with torch.no_grad():
        bad.decoder.conv[2].bias[0] = float("nan")
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (warm_start, integration_warm_start):
        with pytest.raises(ValueError, match=r"'decoder.conv.2.bias' holds 1 non-finite value"):
            fn(model, bad)
    torch.save({"state_dict": bad.state_dict(), "config": bad.config}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"nan.pt.*'decoder.conv.2.bias' holds 1 non-finite"):
        warm_start(model, tmp_path / "nan.pt")
    # finite weights whose prediction overflows are caught before the model is written
    overflow = copy.deepcopy(ghn)
    real_predict = overflow.predict
    def predict(items, *a, **kw):
        out = real_predict(items, *a, **kw)
        name = next(iter(out[0]))
        out[0][name] = torch.full_like(out[0][name], float("inf"))
        return out
    overflow.predict = predict
    with pytest.raises(ValueError, match=r"prediction for this TinyNetwork: tensor 'stem.0.weight' holds"):
        warm_start(model, overflow)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _bench_module():
    path = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks" / "bench_warm_start.py"
    spec = importlib.util.spec_from_file_location("bench_warm_start", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_steps_to_reach():
    mod = _bench_module()
    assert mod.steps_to_reach([0, 5, 10], [10.0, 20.0, 30.0], 20.0) == 5
    assert mod.steps_to_reach([0, 5, 10], [10.0, 20.0, 30.0], 31.0) is None
    assert mod.steps_to_reach([0, 5], [40.0, 20.0], 30.0) == 0


def test_bench_core_on_tiny_settings(ghn, tmp_path):
    mod = _bench_module()
    sp = search_spaces.get("nb201")
    archs = sp.sample_many(2, seed=0, unique=True)
    recs = mod.compare_inits("nb201", archs, ghn, images(48, 0), images(20, 1), steps=4, eval_every=2,
                             build_kwargs={"C": 4, "N": 1}, train_kwargs={"batch_size": 16})
    assert [r["arch"] for r in recs] == [sp.validate(a) for a in archs]
    for r in recs:
        for init in ("ghn", "random"):
            c = r["curves"][init]
            assert c["steps"] == [0, 2, 4] and all(0 <= a <= 100 for a in c["acc"])
        assert set(r["steps_to_match"]) == {"0", "2", "4"}
    summary = mod.summarise(recs)
    assert summary["steps"] == [0, 2, 4] and len(summary["mean_acc"]["ghn"]) == 3
    results = {"nb201": {"ghn": "random", "build_kwargs": {"C": 4, "N": 1}, "archs": recs, "summary": summary}}
    md = mod.markdown(results, dict(n_archs=2, seed=0, steps=4, batch_size=16, lr=0.025, val_images=20,
                                    bn_mode="eval", device="cpu", machine="test"))
    assert "| step |" in md and recs[0]["arch"] in md
    mod.plot(results, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 1000
    json.dumps(results)


def test_random_curves_of_an_earlier_report_are_reused_and_not_retrained(ghn, tmp_path, monkeypatch):
    mod = _bench_module()
    from _ghnbench import JsonlCache

    sp = search_spaces.get("nb201")
    archs = sp.sample_many(1, seed=0, unique=True)
    kw = dict(steps=4, eval_every=2, build_kwargs={"C": 4, "N": 1}, train_kwargs={"batch_size": 16, "lr": 0.025})
    train_data, val_data = images(48, 0), images(20, 1)
    recs = mod.compare_inits("nb201", archs, ghn, train_data, val_data, **kw)
    settings = dict(seed=0, epochs=None, steps=4, eval_every=2, batch_size=16, lr=0.025, bn_mode="eval",
                    val_images=20, eval_split="test", train_images=48, data="cifar10")
    report = {"settings": settings, "results": {"nb201": {"build_kwargs": {"C": 4, "N": 1}, "archs": recs}}}
    cache = JsonlCache(tmp_path / "c.jsonl")
    assert mod.seed_random_curves(report, cache, spaces=["nb201"], sizes={"nb201": {"C": 4, "N": 1}},
                                  settings=settings) == 1
    trained = []
    real_train = mod.train
    monkeypatch.setattr(mod, "train", lambda model, *a, **k: trained.append(1) or real_train(model, *a, **k))
    again = mod.compare_inits("nb201", archs, ghn, train_data, val_data, cache=cache, ghn_key="g", **kw)
    assert len(trained) == 1  # the GHN start only
    assert again[0]["curves"]["random"] == recs[0]["curves"]["random"]
    with pytest.raises(SystemExit, match="other settings.*lr"):
        mod.seed_random_curves(report, cache, spaces=["nb201"], sizes={"nb201": {"C": 4, "N": 1}},
                               settings={**settings, "lr": 0.1})
    with pytest.raises(SystemExit, match="size"):
        mod.seed_random_curves(report, cache, spaces=["nb201"], sizes={"nb201": {"C": 8, "N": 1}},
                               settings=settings)


def test_ghn_only_curves_are_cached_per_warm_start_setting(ghn, tmp_path, monkeypatch):
    mod = _bench_module()
    from _ghnbench import JsonlCache

    archs = search_spaces.get("nb201").sample_many(1, seed=0, unique=True)
    kw = dict(steps=4, eval_every=2, build_kwargs={"C": 4, "N": 1}, train_kwargs={"batch_size": 16},
              cache=JsonlCache(tmp_path / "c.jsonl"), ghn_key="g", inits=("ghn",))
    calls = []
    real_train = mod.train
    monkeypatch.setattr(mod, "train", lambda model, *a, **k: calls.append(k.get("warmup_steps", 0))
                        or real_train(model, *a, **k))
    train_data, val_data = images(48, 0), images(20, 1)
    settings = ({}, {"match_norms": True}, {"ghn_warmup": 2}, {"orthogonalize": True}, {"noise": 0.5},
                {}, {"match_norms": True}, {"orthogonalize": True})
    for setting in settings:
        recs = mod.compare_inits("nb201", archs, ghn, train_data, val_data, **kw, **setting)
        assert set(recs[0]["curves"]) == {"ghn"} and "final_gap" not in recs[0]
    assert calls == [0, 0, 2, 0, 0]  # five settings trained once each; the repeats came from the cache
