"""SynFlow (Tanaka et al., NeurIPS 2020), as used for NAS by Abdelfattah et al. (ICLR 2021).

The network is made linear and positive: every parameter is replaced by its absolute
value and the batch-norm layers are removed, so that with an all-ones input every ReLU
passes its input unchanged. With ``R = sum(f(1))``, the score is the "synaptic flow"
``sum over conv/linear weights of |theta * dR/dtheta|``. Computed in float64 because R
grows multiplicatively with depth (about 1e48 for the largest NAS-Bench-201 networks).

Facts matched to the reference implementations (zero-cost-nas / NASLib): batch-norm
removed, ``abs`` of all parameters, double precision, one all-ones image, per-layer
sums over ``Conv2d`` and ``Linear`` weights (not biases). NASLib stores ``log(score)``;
we do the same by default (``log=True``): a network without any path from input to
output has ``R`` constant, a score of 0 and ``log`` -> ``-inf`` (ranks last).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, logits_of, model_device, register_proxy, scratch_copy, weighted_layers

__all__ = ["SynFlow", "remove_batchnorm"]


def remove_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``model`` by ``nn.Identity`` (in place)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            remove_batchnorm(child)
    return model


@register_proxy("synflow")
class SynFlow(Proxy):
    """Sum of ``|theta * dR/dtheta|`` of the linearised network (log by default)."""

    higher_is_better = True
    needs_data = False

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), log: bool = True):
        self.input_shape = [int(s) for s in input_shape]
        self.log = bool(log)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        shape = tuple(batches[0][0].shape[1:]) if batches else tuple(self.input_shape)
        net = remove_batchnorm(scratch_copy(model)).double().eval()
        with torch.no_grad():
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
        weights = [m.weight for m in weighted_layers(net)]
        for w in weights:
            w.requires_grad_(True)
        x = torch.ones((1, *shape), dtype=torch.float64, device=model_device(net))
        r = logits_of(net(x)).sum()
        grads = torch.autograd.grad(r, weights, allow_unused=True) if r.requires_grad else [None] * len(weights)
        total = 0.0
        for w, g in zip(weights, grads):
            if g is not None:
                total += float((w.detach() * g).abs().sum())
        if not self.log:
            return total
        if math.isnan(total):
            return math.nan
        return math.log(total) if total > 0 else -math.inf
