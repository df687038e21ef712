"""Fisher (Theis et al., 2018; Turner et al., 2020) as a network-level proxy
(Abdelfattah et al., ICLR 2021).

For every output channel ``k`` of a conv/linear layer with activation ``a`` (the layer's
output) and ``g = dL/da``, the Fisher pruning signal is
``Delta_k = 0.5 * mean_n (sum_{h,w} a[n,k,h,w] * g[n,k,h,w])^2`` (one batch,
cross-entropy, network in train mode). As in zero-cost-nas / NASLib, each channel's value
is spread over the ``fan_in = weight[k].numel()`` weights of that channel before the sum,
so the score is ``sum over layers, channels of fan_in * |Delta_k|``.

Activations are read with forward hooks and their gradients with tensor hooks, so the
model's ``forward`` is not patched, and a layer called several times accumulates one
term per call (the reference code handles only one call).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, cross_entropy, prepare_for_grads, register_proxy, weighted_layers, forward_hooks

__all__ = ["Fisher"]


@register_proxy("fisher")
class Fisher(Proxy):
    """Sum over channels of ``fan_in * 0.5 * mean_n (sum_hw a * dL/da)^2``."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        net, weights, x, y = prepare_for_grads(model, batches, "fisher")
        layers = weighted_layers(net)
        totals = {id(m): torch.zeros((), dtype=torch.float64) for m in layers}

        def accumulate(layer: nn.Module, act: torch.Tensor, grad: torch.Tensor) -> None:
            prod = act * grad
            if prod.dim() > 2:
                prod = prod.sum(dim=tuple(range(2, prod.dim())))
            delta = prod.pow(2).mean(0).mul(0.5)  # one value per output channel
            fan_in = math.prod(layer.weight.shape[1:])
            totals[id(layer)] += fan_in * delta.abs().sum().double().cpu()

        def forward_hook(layer: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                act = out.detach()
                out.register_hook(lambda g, layer=layer, act=act: accumulate(layer, act, g.detach()))

        with forward_hooks(layers, forward_hook):
            loss = cross_entropy(net, x, y)
            # the gradient w.r.t. each weight needs the one w.r.t. the layer's output,
            # which fires the tensor hooks
            torch.autograd.grad(loss, weights, allow_unused=True)
        return float(sum(totals.values()))
