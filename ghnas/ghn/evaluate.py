"""How well a network does with given (predicted) parameters, without training it.

One evaluator for every place that judges predicted parameters: meta-training's held-out
evaluation, the GHN proxy and the benchmarks. Batch norm normalises with the statistics
of each evaluation batch (predicted networks have no running statistics), as in GHN-2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class PredictedEval:
    """How one network does on ``n`` images.

    ``acc`` and ``loss`` (mean cross-entropy) are the usual measures. Two bounded ones
    serve the GHN proxy, where a few confidently wrong images can dominate the mean loss:
    ``prob``, the mean softmax probability of the true label (a smooth accuracy), and
    ``clipped_loss``, the mean cross-entropy with each image's loss capped at that of a
    uniform guess (``ln`` of the number of classes), so that a confident mistake counts
    as no worse than chance.
    """

    acc: float
    loss: float
    n: int
    prob: float = float("nan")
    clipped_loss: float = float("nan")


def logits(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with ``params`` in place of its own parameters (differentiable in
    ``params``); the first tensor when the model returns several (auxiliary heads)."""
    from .._util import first_tensor

    return first_tensor(functional_call(model, dict(params), (x,), strict=False), "the network")


@torch.no_grad()
def evaluate_predicted(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, batch: int = 100, amp: bool = False) -> PredictedEval:
    """Evaluate ``model`` with ``params`` on normalised images ``x`` and labels ``y``.

    Images go through in batches of ``batch``; a last batch of a single image is skipped,
    since batch norm cannot normalise one image. The model is put in training mode (batch
    statistics) for the call and restored afterwards; its parameters are not touched.

    Args:
        amp: bfloat16 autocast on CUDA (ignored elsewhere: CPUs without native bfloat16
            run it many times slower).

    Returns:
        a :class:`PredictedEval`; ``loss`` is NaN when the network's outputs are not
        finite, and then so are ``prob`` and ``clipped_loss``.
    """
    if batch < 2:
        raise ValueError(f"evaluation batch must be >= 2 (batch norm needs a batch), got {batch}")
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    x = x.contiguous(memory_format=torch.channels_last)  # ~2x faster pooling and depthwise convs on CPU
    was_training = model.training
    model.train()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=x.device)
    prob_sum = torch.zeros((), dtype=torch.float32, device=x.device)
    clipped_sum = torch.zeros((), dtype=torch.float32, device=x.device)
    n = 0
    use_amp = amp and x.device.type == "cuda"
    try:
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            if len(yb) < 2:
                continue
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = logits(model, params, xb)
            out = out.float()
            correct += (out.argmax(1) == yb).sum()  # kept on the device: one sync per network
            per_image = F.cross_entropy(out, yb, reduction="none")
            loss_sum += per_image.sum()
            prob_sum += torch.exp(-per_image).sum()
            clipped_sum += per_image.clamp(max=math.log(out.shape[1])).sum()
            n += len(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError(f"no batch of at least 2 images to evaluate on ({len(y)} images given)")
    loss = float(loss_sum) / n
    if not math.isfinite(loss):  # clamp and exp would turn NaN logits into finite numbers
        return PredictedEval(acc=int(correct) / n, loss=loss, n=n)
    return PredictedEval(acc=int(correct) / n, loss=loss, n=n, prob=float(prob_sum) / n,
                         clipped_loss=float(clipped_sum) / n)
