"""The GHN proxy: batched scores equal one-by-one scores, metrics, errors."""
from __future__ import annotations

import math

import pytest
import torch

import search_spaces
from conftest import random_batch
from ghnas.ghn import GHN2, save_ghn
from ghnas.proxies import get_proxy, score
from ghnas.proxies.ghn import GHNProxy

BUILD = {"C": 4, "N": 1}


@pytest.fixture(scope="module")
def batch():
    return random_batch(40)  # ghn: the conftest's small GHN


@pytest.fixture(scope="module")
def archs():
    return search_spaces.get("nb201").sample_many(5, seed=2, unique=True)


def test_batched_scores_equal_one_by_one(ghn, batch, archs):
    proxy = GHNProxy(ghn=ghn, metric="acc_loss", eval_batch=20, chunk=5)
    together = score(archs, "nb201", proxy, data=batch, build_kwargs=BUILD, progress=False).scores
    alone = [score([a], "nb201", GHNProxy(ghn=ghn, metric="acc_loss", eval_batch=20, chunk=1), data=batch,
                   build_kwargs=BUILD, progress=False).scores[0] for a in archs]
    assert together == pytest.approx(alone, abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in together)


def test_metrics_are_accuracy_and_loss(ghn, batch, archs):
    acc = score(archs, "nb201", GHNProxy(ghn=ghn, metric="acc", eval_batch=20), data=batch,
                build_kwargs=BUILD, progress=False).scores
    nll = score(archs, "nb201", GHNProxy(ghn=ghn, metric="neg_loss", eval_batch=20), data=batch,
                build_kwargs=BUILD, progress=False).scores
    both = score(archs, "nb201", GHNProxy(ghn=ghn, metric="acc_loss", eval_batch=20), data=batch,
                 build_kwargs=BUILD, progress=False).scores
    # accuracy is a multiple of 1/40; the loss term only breaks ties (less than one image)
    assert all(abs(a * 40 - round(a * 40)) < 1e-9 for a in acc)
    assert all(n < 0 for n in nll)
    assert all(0 <= a - b < 1 / 40 for a, b in zip(acc, both))
    # with the same accuracy, the lower loss ranks first
    for i in range(len(archs)):
        for j in range(len(archs)):
            if acc[i] == acc[j] and nll[i] > nll[j]:
                assert both[i] > both[j]


def test_bounded_metrics_match_a_manual_computation(ghn, batch):
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    model = search_spaces.get("nb201").build(arch, **BUILD)
    prob = GHNProxy(ghn=ghn, metric="prob", eval_batch=40).score(model, [batch])
    clipped = GHNProxy(ghn=ghn, metric="neg_clipped_loss", eval_batch=40).score(model, [batch])
    nll = GHNProxy(ghn=ghn, metric="neg_loss", eval_batch=40).score(model, [batch])
    net = ghn(model)
    with torch.no_grad():
        per_image = torch.nn.functional.cross_entropy(net(batch[0]), batch[1], reduction="none")
    assert prob == pytest.approx(float(torch.exp(-per_image).mean()), rel=1e-5)
    assert clipped == pytest.approx(-float(per_image.clamp(max=math.log(10)).mean()), rel=1e-5)
    assert 0 < prob < 1 and nll <= clipped <= 0 and clipped >= -math.log(10)


def test_neg_prob_is_minus_the_true_label_probability(ghn, batch):
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    model = search_spaces.get("nb201").build(arch, **BUILD)
    prob = GHNProxy(ghn=ghn, metric="prob", eval_batch=40).score(model, [batch])
    assert GHNProxy(ghn=ghn, metric="neg_prob", eval_batch=40).score(model, [batch]) == pytest.approx(-prob)


def test_the_default_metric_and_images_are_the_scored_spaces():
    from ghnas.proxies.ghn import DEFAULT_METRIC, SPACE_IMAGES, SPACE_METRICS

    proxy = GHNProxy()
    assert proxy.metric is None
    assert proxy.metric_for("darts") == SPACE_METRICS["darts"] == "neg_prob"
    assert proxy.metric_for(search_spaces.get("nb201")) == proxy.metric_for(None) == DEFAULT_METRIC
    assert GHNProxy(metric="acc").metric_for("darts") == "acc"  # a given metric wins
    # made by name for a space, it takes the space's image count; a set batch size is kept
    assert get_proxy("ghn", space="darts").default_batch_size == SPACE_IMAGES["darts"]
    assert get_proxy("ghn", space="nb201").default_batch_size == GHNProxy.default_batch_size == 1000
    assert get_proxy("ghn").default_batch_size == 1000
    assert GHNProxy().with_batch_size(300).for_space("darts").default_batch_size == 300


def test_scores_and_cache_identity_follow_the_spaces_metric(ghn, batch):
    from ghnas.proxies.ghn import SPACE_METRICS

    darts = search_spaces.get("darts")
    arch = darts.sample(0)
    build = {"C": 4, "layers": 2}
    by_default = score([arch], "darts", GHNProxy(ghn=ghn, eval_batch=20), data=batch, build_kwargs=build,
                       progress=False).scores[0]
    named = score([arch], "darts", GHNProxy(ghn=ghn, metric=SPACE_METRICS["darts"], eval_batch=20), data=batch,
                  build_kwargs=build, progress=False).scores[0]
    loss = score([arch], "darts", GHNProxy(ghn=ghn, metric="neg_loss", eval_batch=20), data=batch,
                 build_kwargs=build, progress=False).scores[0]
    assert by_default == pytest.approx(named) and by_default != pytest.approx(loss)
    assert -1 < by_default < 0  # minus a probability
    # cached scores are keyed by the metric in use, so the two spaces' defaults never share them
    ident = GHNProxy(ghn=ghn).identity
    assert ident(darts)["metric"] == "neg_prob" and ident(search_spaces.get("nb201"))["metric"] == "neg_loss"


def test_clipped_loss_caps_a_confident_mistake_at_chance():
    from ghnas.ghn.evaluate import evaluate_predicted

    class Fixed(torch.nn.Module):  # logits given by a parameter: image 0 confidently wrong
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(4, 10))

        def forward(self, x):
            return self.w[: len(x)]

    w = torch.zeros(4, 10)
    w[0, 1] = 50.0  # label 0, predicted 1 with probability ~1: loss ~50
    w[1:, 0] = 5.0   # the others right
    res = evaluate_predicted(Fixed(), {"w": w}, torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), batch=4)
    assert res.loss > 12  # the mistake dominates the mean loss
    right = math.log(1 + 9 * math.exp(-5))  # each correct image's loss
    assert res.clipped_loss == pytest.approx((math.log(10) + 3 * right) / 4, rel=1e-5)  # capped at chance
    assert res.prob == pytest.approx(3 * float(torch.softmax(w[1], 0)[0]) / 4, rel=1e-5)
    w[0, 1] = float("nan")
    res = evaluate_predicted(Fixed(), {"w": w}, torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long), batch=4)
    assert math.isnan(res.loss) and math.isnan(res.prob) and math.isnan(res.clipped_loss)


def test_ghn_acc_is_the_accuracy_metric_by_name(ghn, batch, archs):
    by_name = score(archs, "nb201", get_proxy("ghn_acc", ghn=ghn, eval_batch=20), data=batch,
                    build_kwargs=BUILD, progress=False)
    explicit = score(archs, "nb201", GHNProxy(ghn=ghn, metric="acc", eval_batch=20), data=batch,
                     build_kwargs=BUILD, progress=False)
    assert by_name.scores == explicit.scores and by_name.proxy == "ghn_acc"


def test_score_on_a_model_matches_manual_evaluation(ghn, batch):
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    model = search_spaces.get("nb201").build(arch, **BUILD)
    proxy = GHNProxy(ghn=ghn, metric="acc", eval_batch=40)
    value = proxy.score(model, [batch])
    net = ghn(model)  # in place, BN on batch statistics as ppuda does
    with torch.no_grad():
        pred = net(batch[0]).argmax(1)
    assert value == pytest.approx(float((pred == batch[1]).float().mean()))


def test_checkpoint_path_and_cache_key(ghn, batch, archs, tmp_path):
    path = save_ghn(ghn, tmp_path / "g.pt") or tmp_path / "g.pt"
    by_path = score(archs[:2], "nb201", get_proxy("ghn", ghn=str(path), eval_batch=20), data=batch,
                    build_kwargs=BUILD, progress=False).scores
    by_obj = score(archs[:2], "nb201", GHNProxy(ghn=ghn, eval_batch=20), data=batch,
                   build_kwargs=BUILD, progress=False).scores
    assert by_path == pytest.approx(by_obj, abs=1e-6)
    # different GHN weights never share cached values
    other = GHN2(hid=16, max_shape=(16, 16, 3, 3))
    assert GHNProxy(ghn=ghn).settings()["ghn"] != GHNProxy(ghn=other).settings()["ghn"]


def test_a_retrained_checkpoint_under_the_same_path_is_never_served_stale_scores(ghn, batch, archs, tmp_path):
    path, cache = tmp_path / "g.pt", tmp_path / "scores.jsonl"
    save_ghn(ghn, path)
    kw = dict(data=batch, build_kwargs=BUILD, progress=False, cache=cache)
    first = score(archs[:3], "nb201", get_proxy("ghn", ghn=str(path), eval_batch=20), **kw)
    again = score(archs[:3], "nb201", get_proxy("ghn", ghn=str(path), eval_batch=20), **kw)
    assert all(r.cached for r in again.rows) and again.scores == first.scores
    # the same weights given as an object share the cache entries
    assert all(r.cached for r in score(archs[:3], "nb201", GHNProxy(ghn=ghn, eval_batch=20), **kw).rows)
    torch.manual_seed(1)
    save_ghn(GHN2(hid=16, max_shape=(16, 16, 3, 3)), path)  # new weights, same file name
    retrained = score(archs[:3], "nb201", get_proxy("ghn", ghn=str(path), eval_batch=20), **kw)
    assert not any(r.cached for r in retrained.rows)
    assert retrained.scores != first.scores


def test_errors(ghn):
    with pytest.raises(ValueError, match="unknown GHN proxy metric 'top5'"):
        GHNProxy(ghn=ghn, metric="top5")
    with pytest.raises(ValueError, match="eval_batch"):
        GHNProxy(ghn=ghn, eval_batch=1)
    with pytest.raises(ValueError, match="needs data"):
        GHNProxy(ghn=ghn).score(torch.nn.Linear(2, 2), None)
    assert not math.isnan(GHNProxy(ghn=ghn).eval_batch)


def test_non_finite_ghns_are_refused_and_non_finite_networks_score_nan(ghn, batch, archs, tmp_path):
    """Issue 12: a NaN GHN let search exit 0 with every score -inf."""
    import copy

    bad = copy.deepcopy(ghn)
    with torch.no_grad():
        bad.embed.weight[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"GHNProxy: the GHN: tensor 'embed.weight' holds 1 non-finite"):
        GHNProxy(ghn=bad)
    torch.save({"state_dict": bad.state_dict(), "config": bad.config}, tmp_path / "inf.pt")
    with pytest.raises(ValueError, match=r"inf.pt.*'embed.weight' holds 1 non-finite"):
        score(archs[:1], "nb201", GHNProxy(ghn=str(tmp_path / "inf.pt")), data=batch, build_kwargs=BUILD,
              progress=False)
    # finite weights, non-finite predicted network: NaN under every metric (accuracy too),
    # which score() ranks last (-inf) and a degenerate-result check can see
    proxy = GHNProxy(ghn=ghn, metric="acc", eval_batch=20)
    model = search_spaces.get("nb201").build(archs[0], **BUILD)
    with torch.no_grad():
        params = ghn.predict([model])[0]
    params = {k: torch.full_like(v, float("nan")) for k, v in params.items()}
    assert math.isnan(proxy._evaluate(model, params, [batch]))
    params = {k: torch.full_like(v, 1e38) for k, v in params.items()}  # overflows to inf logits
    assert math.isnan(proxy._evaluate(model, params, [batch]))


def test_ghn_call_on_a_cell_with_dead_ops(ghn):
    # node 2 feeds nothing (its only outgoing edge is `none`): its ops never reach the output
    arch = "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|skip_connect~1|none~2|"
    model = search_spaces.get("nb201").build(arch, **BUILD)
    before = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.warns(UserWarning, match="not used by the forward pass"):
        ghn(model)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and len(changed) < len(before)  # live parameters predicted, dead ones left alone
