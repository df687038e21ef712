"""plain (Abdelfattah et al., ICLR 2021; in NAS-Bench-Suite-Zero): ``sum theta * dL/dtheta``.

SNIP without the absolute value: the first-order change of the loss if every conv/linear
weight were removed, summed with its sign. Cross-entropy of one batch, network in train
mode (batch statistics), as in NASLib's ``plain`` measure (``l.weight.grad * l.weight``
summed over ``Conv2d`` and ``Linear`` layers).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, cross_entropy, prepare_for_grads, register_proxy

__all__ = ["Plain"]


@register_proxy("plain")
class Plain(Proxy):
    """Signed sum of ``theta * dL/dtheta`` over conv/linear weights."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        net, weights, x, y = prepare_for_grads(model, batches, "plain")
        if not weights:
            raise ValueError("plain scores conv/linear weights, and this model has none")
        loss = cross_entropy(net, x, y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        total = torch.zeros((), dtype=torch.float64)
        for w, g in zip(weights, grads):
            if g is not None:
                total += (w.detach() * g).double().sum().cpu()
        return float(total)
