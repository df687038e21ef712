"""MeCo (Jiang et al., NeurIPS 2023): minimum eigenvalue of the correlation of feature maps.

For every module's output on one image, the feature map of shape (C, H, W) is read as C
vectors of length H*W; ``P`` is their C x C Pearson correlation matrix (undefined entries,
from constant channels, set to 0) and the module contributes ``lambda_min(P)``. The score
is the sum over all modules (those whose value is NaN or infinite are left out).

Facts matched to the authors' code (HamsterMimi/MeCo, ``correlation/NAS_Bench_201.py``):
a forward hook on *every* module (containers included, so a Sequential's output counts
once for itself and once for its last child), the *first* image of the batch only, a batch
of one image (``--batch_size 1``), the network in train mode with its default
initialisation, and no log. Outputs whose per-image part is not at least a matrix (logits,
pooled vectors) give a constant row, a zero matrix and 0, as in the reference.
``meco_opt`` (sampling 8 channels) is their faster variant; not provided here.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import first_tensor
from .base import Batch, Proxy, one_batch, register_proxy, scratch_copy, forward_hooks

__all__ = ["MeCo", "min_eig_corr"]


def min_eig_corr(feature: torch.Tensor) -> float:
    """``lambda_min`` of the row-correlation matrix of ``feature`` reshaped to (rows, -1);
    NaN/inf correlations (constant rows) are replaced by 0 first, as MeCo does."""
    f = feature.detach().reshape(feature.shape[0], -1).to(torch.float64)
    if f.shape[1] < 2:
        return 0.0  # one value per row: every correlation is undefined -> all zeros -> 0
    if f.shape[0] < 2:
        # a single row: corrcoef is a scalar (1, or nan for a constant row -> 0)
        c = torch.corrcoef(f).reshape(1, 1)
    else:
        c = torch.corrcoef(f)
    c = torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(c).min())


@register_proxy("meco")
class MeCo(Proxy):
    """Sum over modules of the smallest eigenvalue of the channel correlation of one image."""

    higher_is_better = True
    needs_data = True
    default_batch_size = 1

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "meco")
        if x.dim() != 4:
            raise ValueError(f"meco needs image batches of shape (B, C, H, W), got {tuple(x.shape)}")
        if not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
            raise ValueError("meco scores convolutional feature maps, and this model has no convolution")
        net = scratch_copy(model).train()
        values: list[float] = []

        def hook(mod: nn.Module, inp: tuple, out) -> None:
            t = first_tensor(out)
            if t is None or t.dim() < 2 or t.shape[0] == 0:
                return
            # computed now: a later in-place op (ReLU(inplace=True)) may overwrite ``out``
            values.append(min_eig_corr(t[0].reshape(t.shape[1], -1)))

        with forward_hooks(net.modules(), hook):
            with torch.no_grad():
                net(x)
        finite = [v for v in values if math.isfinite(v)]
        return float(sum(finite)) if finite else math.nan
