"""l2_norm (NAS-Bench-Suite-Zero, Krishnakumar et al., NeurIPS 2022 datasets track).

The sum over conv/linear layers of the Euclidean norm of the layer's weight at
initialisation: a data-free size-and-initialisation baseline. As in NASLib's
``l2_norm`` measure (``lambda l: l.weight.norm()`` summed over ``Conv2d`` and ``Linear``
layers), a sum of per-layer norms, not the norm of all weights together.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, register_proxy, weighted_layers

__all__ = ["L2Norm"]


@register_proxy("l2_norm")
class L2Norm(Proxy):
    """Sum of per-layer L2 norms of the conv/linear weights (data-free)."""

    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        layers = weighted_layers(model)
        if not layers:
            raise ValueError("l2_norm sums the weight norms of conv/linear layers, and this model has none")
        with torch.no_grad():
            return float(sum(float(m.weight.detach().to(torch.float64).norm()) for m in layers))
