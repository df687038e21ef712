"""SNIP (Lee et al., ICLR 2019) as a network-level proxy (Abdelfattah et al., ICLR 2021).

SNIP's connection sensitivity is the gradient of the loss with respect to a multiplicative
mask ``m`` on each weight, at ``m = 1``: ``dL/dm = theta * dL/dtheta``. The score sums
``|theta * dL/dtheta|`` over all conv/linear weights, with the cross-entropy of one batch
and the network in train mode (batch statistics), as zero-cost-nas / NASLib do. (They
insert explicit mask parameters; the product rule above gives the same numbers without
patching the layers' ``forward``.)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, cross_entropy, prepare_for_grads, register_proxy

__all__ = ["SNIP"]


@register_proxy("snip")
class SNIP(Proxy):
    """Sum of ``|theta * dL/dtheta|`` over conv/linear weights."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        net, weights, x, y = prepare_for_grads(model, batches, "snip")
        loss = cross_entropy(net, x, y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        total = torch.zeros((), dtype=torch.float64)
        for w, g in zip(weights, grads):
            if g is not None:
                total += (w.detach() * g).abs().sum().double().cpu()
        return float(total)
