"""GraSP (Wang et al., ICLR 2020) as a network-level proxy (Abdelfattah et al., ICLR 2021).

GraSP measures how removing a weight changes the gradient flow, through the
Hessian-gradient product ``Hg``: with ``g = dL/dtheta`` (held constant) and
``z = g . dL/dtheta`` (differentiable), ``Hg = dz/dtheta``. The score is
``sum(-theta * Hg)`` over conv/linear weights, with the sign of zero-cost-nas / NASLib
(who note that accuracy correlates with the negated GraSP saliency). One batch,
cross-entropy, network in train mode.

The reference code runs two forward passes (one for ``g``, one differentiable); with
batch statistics both give the same outputs, so we use one pass and detach ``g`` from it
(different numbers only for models with dropout or other randomness in ``forward``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, cross_entropy, prepare_for_grads, register_proxy

__all__ = ["GraSP"]


@register_proxy("grasp")
class GraSP(Proxy):
    """``sum(-theta * H g)`` over conv/linear weights."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        net, weights, x, y = prepare_for_grads(model, batches, "grasp")
        loss = cross_entropy(net, x, y)
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        used = [(w, g) for w, g in zip(weights, grads) if g is not None]
        if not used:
            return 0.0
        z = sum((g.detach() * g).sum() for _, g in used)
        if not z.requires_grad:  # the loss is linear in every weight: H = 0
            return 0.0
        hg = torch.autograd.grad(z, [w for w, _ in used], allow_unused=True)
        total = torch.zeros((), dtype=torch.float64)
        for (w, _), h in zip(used, hg):
            if h is not None:
                total += (-w.detach() * h).sum().double().cpu()
        return float(total)
