"""ZiCo (Li et al., ICLR 2023): inverse coefficient of variation of the gradients.

The loss gradient of every conv/linear weight is taken on several batches (two, as in the
authors' code). Per weight element, ``mean |g|`` and ``std g`` over the batches; per layer,
``S_l = sum(mean|g| / std g)`` over the elements whose std is non-zero; the score is
``sum_l log(S_l)`` over the layers with ``S_l > 0``. Networks whose gradients are large
and agree across batches score high.

Facts matched to the authors' code (SLDGroup/ZiCo ``compute_zico.py`` and AZ-NAS's
NAS-Bench-201 port of it): cross-entropy, network in train mode, ``nn.Conv2d`` and
``nn.Linear`` weights only, population std (numpy's ``ddof=0``), natural log, two batches.
With one batch given, we cut it into two halves (batch size = total / 2).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import split_batches
from .base import Batch, Proxy, cross_entropy, register_proxy, scratch_copy, weighted_layers

__all__ = ["ZiCo", "zico_from_grads"]


def zico_from_grads(per_layer: Sequence[torch.Tensor]) -> float:
    """The ZiCo formula on a list of (n_batches, n_weights) gradient matrices, one per layer."""
    total = 0.0
    for g in per_layer:
        g = g.to(torch.float64)
        std = g.std(dim=0, unbiased=False)
        keep = std != 0
        if not bool(keep.any()):
            continue
        s = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
        if s > 0:
            total += math.log(s)
    return total


@register_proxy("zico")
class ZiCo(Proxy):
    """``sum over layers of log(sum(mean|grad| / std(grad)))`` over ``n_batches`` batches."""

    higher_is_better = True
    needs_data = True
    default_batch_size = 128  # two batches of 64

    def __init__(self, n_batches: int = 2):
        if int(n_batches) < 2:
            raise ValueError(f"zico needs n_batches >= 2 (a standard deviation over batches), got {n_batches}")
        self.n_batches = int(n_batches)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        parts = split_batches(batches, self.n_batches, "zico")
        net = scratch_copy(model).train()
        layers = [m for m in weighted_layers(net)
                  if isinstance(m, (nn.Conv2d, nn.Linear))]
        if not layers:
            raise ValueError("zico reads the gradients of nn.Conv2d / nn.Linear weights, and this "
                             "model has none")
        weights = [m.weight for m in layers]
        for w in weights:
            w.requires_grad_(True)
        grads: list[list[torch.Tensor]] = [[] for _ in weights]
        for x, y in parts:
            g = torch.autograd.grad(cross_entropy(net, x, y), weights, allow_unused=True)
            for i, (w, gi) in enumerate(zip(weights, g)):
                # a weight the loss does not reach has zero gradient: its std is 0, skipped
                grads[i].append((gi if gi is not None else torch.zeros_like(w)).detach().reshape(-1))
        value = zico_from_grads([torch.stack(g) for g in grads])
        return value if math.isfinite(value) else math.nan
