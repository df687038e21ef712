"""The low-cost GHN proxy: SGD steps from the prediction, scored on the other images."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import search_spaces
from conftest import random_batch
from ghnas.ghn.evaluate import logits
from ghnas.graph import extract
from ghnas.proxies import get_proxy, score
from ghnas.proxies.ghn import GHNProxy
from ghnas.proxies.ghn_finetune import GHNFinetuneProxy, finetune_predicted

BUILD = {"C": 4, "N": 1}
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def batch():
    return random_batch(44)  # ghn: the conftest's small GHN


def test_steps_lower_the_training_loss_and_leave_model_and_prediction_alone(ghn, batch):
    model = search_spaces.get("nb201").build(ARCH, **BUILD)
    with torch.no_grad():
        params = ghn.predict([extract(model)])[0]
    kept = {k: v.clone() for k, v in params.items()}
    x, y = batch[0][:24], batch[1][:24]
    model.train()
    start = F.cross_entropy(logits(model, params, x), y).item()
    before = {k: v.clone() for k, v in model.state_dict().items()}  # buffers included
    tuned = finetune_predicted(model, params, x, y, steps=10, lr=0.05)
    assert all(torch.equal(kept[k], v) for k, v in params.items())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert F.cross_entropy(logits(model, tuned, x), y).item() < start - 0.05
    same = finetune_predicted(model, params, x, y, steps=0, lr=0.05)
    assert all(torch.equal(kept[k], same[k]) for k in kept)


def test_zero_steps_is_the_zero_cost_proxy_on_the_scored_images(ghn, batch):
    archs = search_spaces.get("nb201").sample_many(3, seed=4, unique=True)
    x, y = batch
    ft = score(archs, "nb201", GHNFinetuneProxy(ghn=ghn, steps=0, train_images=24, eval_batch=20),
               data=(x, y), build_kwargs=BUILD, progress=False).scores
    zc = score(archs, "nb201", GHNProxy(ghn=ghn, eval_batch=20), data=(x[24:], y[24:]),
               build_kwargs=BUILD, progress=False).scores
    assert ft == pytest.approx(zc, abs=1e-6)
    moved = score(archs, "nb201", GHNFinetuneProxy(ghn=ghn, steps=3, train_images=24, eval_batch=20),
                  data=(x, y), build_kwargs=BUILD, progress=False).scores
    assert moved != pytest.approx(zc, abs=1e-4)


def test_registered_and_errors(ghn, batch):
    assert isinstance(get_proxy("ghn_finetune", ghn=ghn, steps=2), GHNFinetuneProxy)
    with pytest.raises(ValueError, match="train_images=64"):
        score([ARCH], "nb201", GHNFinetuneProxy(ghn=ghn), data=batch, build_kwargs=BUILD, progress=False)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        GHNFinetuneProxy(steps=-1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        GHNFinetuneProxy(lr=0)


def test_default_batch_is_the_training_images_plus_the_scored_ones_in_every_space():
    for space in ("nb201", "darts", None):
        proxy = get_proxy("ghn_finetune", space=space)
        assert proxy.default_batch_size == 64 + 200
    assert get_proxy("ghn_finetune", space="darts", train_images=32).default_batch_size == 232
    assert GHNFinetuneProxy().with_batch_size(100).default_batch_size == 100
