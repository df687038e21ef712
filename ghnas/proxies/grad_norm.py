"""grad_norm (Abdelfattah et al., ICLR 2021): how large the first gradient step would be.

Score: the sum over conv/linear layers of the Euclidean norm of the gradient of the
cross-entropy loss (one batch, network in train mode) with respect to the layer's weight.
As in zero-cost-nas / NASLib, it is a sum of per-layer norms, not the norm of the
concatenated gradient. Weights that receive no gradient contribute 0.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, cross_entropy, prepare_for_grads, register_proxy

__all__ = ["GradNorm"]


@register_proxy("grad_norm")
class GradNorm(Proxy):
    """Sum of per-layer L2 norms of the loss gradient."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        net, weights, x, y = prepare_for_grads(model, batches, "grad_norm")
        loss = cross_entropy(net, x, y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        return float(sum(float(g.norm()) for g in grads if g is not None))
