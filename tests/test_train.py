"""Tests for ghnas.train: learning, evaluation (BN modes), determinism and history."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

import search_spaces
from ghnas.data import ImageData
from ghnas.train import EvalResult, TrainResult, evaluate, train

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convolutions run several times faster on one thread on a busy 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def colour_task(n: int, seed: int, size: int = 8, k: int = 4) -> ImageData:
    """A learnable task: noisy images whose class brightens one colour channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    img = torch.randint(0, 256, (n, 3, size, size), generator=g).float() * 0.3
    for c in range(k):
        img[y == c, c % 3] += 150 if c < 3 else 75
    return ImageData(img.clamp(0, 255).to(torch.uint8), y, [str(c) for c in range(k)])


def tiny_nb201(num_classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return search_spaces.get("nb201").build(ARCH, C=4, N=1, num_classes=num_classes)


class BNDropNet(nn.Module):
    """Conv-BN-ReLU-Dropout-Linear on 8x8 inputs."""

    def __init__(self, k: int = 4, p: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(6, k)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.drop(h))


# ------------------------------------------------------------------ training
def test_training_reduces_loss_on_a_learnable_task():
    data = colour_task(256, seed=0)
    model = tiny_nb201()
    before = evaluate(model, data)
    res = train(model, data, steps=30, batch_size=32, lr=0.05, progress=False)
    after = evaluate(model, data)
    assert res.steps == 30 and len(res.step_losses) == 30
    assert after.loss < 0.7 * before.loss, (before, after)
    assert after.accuracy > 0.6
    assert math.isfinite(res.train_loss) and not res.diverged
    # train_loss is the mean over the last epoch (8 steps of 32 images)
    assert res.train_loss == pytest.approx(sum(res.step_losses[-8:]) / 8, rel=1e-6)


def test_same_seed_is_deterministic_and_other_seed_differs():
    data = colour_task(96, seed=1)
    kw = dict(steps=6, batch_size=16, progress=False)
    a, b, c = tiny_nb201(), tiny_nb201(), tiny_nb201()
    ra = train(a, data, seed=3, **kw)
    rb = train(b, data, seed=3, **kw)
    rc = train(c, data, seed=4, **kw)
    assert ra.step_losses == rb.step_losses
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert ra.step_losses != rc.step_losses


def test_train_leaves_the_global_rng_alone():
    data = colour_task(32, seed=2)
    model = BNDropNet()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, data, steps=2, batch_size=16, seed=9, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_history_points_at_eval_every_with_step_zero_and_end():
    data, val = colour_task(64, seed=0), colour_task(40, seed=5)
    res = train(tiny_nb201(), data, steps=7, batch_size=16, eval_data=val, eval_every=3,
                progress=False)
    assert [p.step for p in res.history] == [0, 3, 6, 7]
    assert res.history[0].train_loss is None and res.history[0].lr == pytest.approx(0.025)
    assert all(p.eval_accuracy is not None and p.eval_loss is not None for p in res.history)
    assert all(p.train_loss is not None for p in res.history[1:])
    # each point's loss is the mean of the steps since the previous point
    assert res.history[1].train_loss == pytest.approx(sum(res.step_losses[:3]) / 3, rel=1e-6)
    assert res.history[3].train_loss == pytest.approx(res.step_losses[6], rel=1e-6)
    assert res.history[-1].lr == pytest.approx(0.0, abs=1e-12)  # cosine reaches zero
    steps, acc = res.series("eval_accuracy")
    assert steps == [0, 3, 6, 7] and len(acc) == 4
    assert res.eval_accuracy == acc[-1]
    assert res.series("train_loss")[0] == [3, 6, 7]
    with pytest.raises(ValueError, match="unknown history field 'acc'"):
        res.series("acc")
    # at step 0 the model has not been updated: that point is the initial accuracy
    fresh = evaluate(tiny_nb201(), val)
    assert res.history[0].eval_accuracy == fresh.accuracy


def test_epochs_give_one_point_per_epoch_and_fractional_epochs():
    data = colour_task(48, seed=0)
    res = train(BNDropNet(), data, epochs=2, batch_size=16, progress=False)
    assert res.steps == 6 and res.epochs == 2
    assert [p.step for p in res.history] == [3, 6]
    assert [p.epoch for p in res.history] == [1.0, 2.0]
    assert res.history[0].eval_accuracy is None and res.eval_accuracy is None
    half = train(BNDropNet(), data, epochs=0.67, batch_size=16, progress=False)
    assert half.steps == 2


def test_small_dataset_keeps_its_only_batch():
    data = colour_task(10, seed=0)  # fewer images than batch_size: no drop_last
    res = train(BNDropNet(), data, epochs=3, batch_size=16, progress=False)
    assert res.steps == 3


def test_auxiliary_logits_are_trained():
    class AuxNet(BNDropNet):
        def __init__(self):
            super().__init__(p=0.0)
            self.aux = nn.Linear(6, 4)

        def forward(self, x):
            h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
            return (self.fc(h), self.aux(h)) if self.training else self.fc(h)

    data = colour_task(32, seed=0)
    model = AuxNet()
    before = model.aux.weight.detach().clone()
    train(model, data, steps=2, batch_size=16, progress=False)
    assert not torch.equal(before, model.aux.weight)
    frozen = AuxNet()
    before = frozen.aux.weight.detach().clone()
    train(frozen, data, steps=2, batch_size=16, aux_weight=0.0, weight_decay=0.0, progress=False)
    assert torch.equal(before, frozen.aux.weight)


def test_bad_arguments_are_named():
    data = colour_task(16, seed=0)
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        train(BNDropNet(), data, progress=False)
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        train(BNDropNet(), data, steps=2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        train(BNDropNet(), data, steps=2, eval_every=0, progress=False)
    with pytest.raises(TypeError, match="ImageData"):
        train(BNDropNet(), [1, 2, 3], steps=2, progress=False)
    with pytest.raises(ValueError, match="unknown bn_mode 'train'; valid: eval, batch"):
        evaluate(BNDropNet(), data, bn_mode="train")


def test_result_serialises():
    data = colour_task(32, seed=0)
    res = train(BNDropNet(), data, steps=2, batch_size=16, eval_data=data, eval_every=1,
                progress=False)
    assert isinstance(res, TrainResult)
    d = json.loads(res.to_json())
    assert d["steps"] == 2 and len(d["history"]) == 3 and d["settings"]["lr"] == 0.025
    assert d == json.loads(json.dumps(res.to_dict()))


def test_divergence_stops_the_run():
    data = colour_task(64, seed=0)
    model = BNDropNet()
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    res = train(model, data, steps=8, batch_size=16, eval_every=2, grad_clip=None, progress=False)
    assert res.diverged and res.steps == 2
    assert json.loads(res.to_json())["train_loss"] is None


# ------------------------------------------------------------------ evaluation
def _fixed_output_model(logits: torch.Tensor, as_tuple: bool = False) -> nn.Module:
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            out = logits[: len(x)] + 0 * self.w
            return (out, torch.zeros_like(out)) if as_tuple else out

    return Fixed()


@pytest.mark.parametrize("as_tuple", [False, True])
def test_evaluate_hand_case(as_tuple):
    # 4 images, labels 0,1,1,2; the model predicts classes 0,1,2,2 -> 3 of 4 right
    logits = torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 3.0], [0, 0, 1.0]])
    y = torch.tensor([0, 1, 1, 2])
    data = ImageData(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), y, ["a", "b", "c"])
    res = evaluate(_fixed_output_model(logits, as_tuple), data, batch_size=4)
    expected_loss = nn.functional.cross_entropy(logits, y).item()
    assert isinstance(res, EvalResult) and res.n == 4
    assert res.accuracy == 0.75
    assert res.loss == pytest.approx(expected_loss, rel=1e-6)
    assert res.to_dict() == {"accuracy": 0.75, "loss": res.loss, "n": 4}


def test_evaluate_is_independent_of_batch_size_in_eval_mode():
    data = colour_task(50, seed=0)
    model = BNDropNet()
    a, b = evaluate(model, data, batch_size=7), evaluate(model, data, batch_size=50)
    assert a.n == b.n == 50 and a.accuracy == b.accuracy
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_bn_batch_mode_uses_batch_statistics_and_restores_the_model():
    data = colour_task(40, seed=0)
    model = BNDropNet(p=0.9)
    with torch.no_grad():  # running stats far from the data's, so the two modes differ
        model.bn.running_mean.fill_(5.0)
        model.bn.running_var.fill_(0.01)
    model.train()
    model.drop.eval()  # a mixed state must come back exactly
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]

    batch = evaluate(model, data, batch_size=40, bn_mode="batch")
    again = evaluate(model, data, batch_size=40, bn_mode="batch")
    assert batch == again  # dropout off: deterministic
    assert [m.training for m in model.modules()] == flags
    assert model.bn.track_running_stats is True
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running stats and num_batches_tracked untouched

    # reference: BN normalising with the whole batch's statistics, dropout off
    ref = copy.deepcopy(model).eval()
    ref.bn.train()
    ref.bn.track_running_stats = False
    x, y = next(data.batches(40))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(ref(x), y).item()
    assert batch.loss == pytest.approx(expected, rel=1e-5)
    assert evaluate(model, data, bn_mode="eval").loss != pytest.approx(batch.loss, rel=1e-3)
    assert [m.training for m in model.modules()] == flags


def test_evaluate_restores_flags_after_an_error():
    class Boom(BNDropNet):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Boom().train()
    for mode in ("eval", "batch"):
        with pytest.raises(RuntimeError, match="boom"):
            evaluate(model, colour_task(8, seed=0), bn_mode=mode)
        assert all(m.training for m in model.modules())
        assert model.bn.track_running_stats


def test_trains_nb201_from_the_cifar_sample():
    """The real data path: the shipped CIFAR-10 sample, augmented, at 32x32."""
    from ghnas.data import load

    data = load("sample").subset(64, seed=0)
    model = tiny_nb201(num_classes=10)
    res = train(model, data, steps=3, batch_size=32, eval_data=data.subset(20, seed=1),
                eval_every=3, progress=False)
    assert [p.step for p in res.history] == [0, 3]
    assert all(math.isfinite(v) for v in res.step_losses)


def test_warmup_ramps_the_learning_rate_then_follows_the_cosine():
    data = colour_task(64, seed=0)
    res = train(tiny_nb201(), data, steps=8, batch_size=16, eval_every=1, progress=False, warmup_steps=4)
    cos = [0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(9)]
    want = [0.025 * cos[t] * min(1.0, (t + 1) / 4) for t in range(9)]
    assert [p.lr for p in res.history] == pytest.approx(want, rel=1e-6)
    assert res.settings["warmup_steps"] == 4
    plain = train(tiny_nb201(), data, steps=8, batch_size=16, eval_every=1, progress=False)
    assert [p.lr for p in plain.history] == pytest.approx([0.025 * c for c in cos], rel=1e-6)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        train(tiny_nb201(), data, steps=2, progress=False, warmup_steps=-1)
