"""TE-NAS (Chen et al., ICLR 2021): trainability by the NTK, expressivity by linear regions.

* ``ntk_cond`` -- condition number ``lambda_max / lambda_min`` of the empirical neural
  tangent kernel ``Theta = J J^T`` on a batch of ``B`` images, ``J[i]`` the gradient of
  the sum of image ``i``'s logits with respect to the weights. A well-conditioned NTK
  trains fast, so *lower is better* (``higher_is_better = False``; TE-NAS ranks by
  ``-cond``). Facts matched to TE-NAS's code (VITA-Group/TENAS ``get_ntk_n``, and
  AZ-NAS's port): network in train mode, one batch, per-image backward of
  ``logit[i]`` against ones, every parameter whose name contains ``weight`` (so batch
  norm scales too), ``eigh`` of the kernel, ``nan`` when the smallest eigenvalue is 0.
* ``linear_regions`` -- the number of distinct ReLU activation patterns (sign of every
  ReLU output) among the images, i.e. how many linear regions of the network the images
  fall into; higher is better. TE-NAS counts them over 3 batches of 1,000 images
  (``input_size=(1000, 1, 3, 3)``, ``sample_batch=3``) on a thin copy of the network
  (C=1 there); ours counts over the images given (one batch), on the network given: pick
  the batch and the network size with ``batch_size`` and ``build_kwargs``.
* ``te_nas`` -- TE-NAS's combination: the mean of the two proxies' ranks over the scored
  set (a rank ensemble, like ``'vote:ntk_cond,linear_regions'``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import count_distinct_rows, relu_modules
from .base import Batch, Proxy, logits_of, one_batch, register_proxy, scratch_copy, forward_hooks
from .ensemble import Ensemble

__all__ = ["NTKCondition", "LinearRegions", "ntk_condition_number", "count_linear_regions"]


def ntk_condition_number(jacobian: torch.Tensor) -> float:
    """``lambda_max / lambda_min`` of ``J J^T`` for a (B, P) per-image gradient matrix."""
    j = jacobian.detach().to(torch.float64)
    eig = torch.linalg.eigvalsh(j @ j.T)
    lo, hi = float(eig[0]), float(eig[-1])
    if not lo > 0 or not math.isfinite(hi):
        return math.nan  # singular (or broken) kernel: condition number undefined
    return hi / lo


@register_proxy("ntk_cond")
class NTKCondition(Proxy):
    """Condition number of the empirical NTK on one batch (lower is better)."""

    higher_is_better = False
    needs_data = True
    default_batch_size = 32

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "ntk_cond")
        if x.shape[0] < 2:
            raise ValueError(f"ntk_cond needs at least 2 images, got {x.shape[0]}")
        net = scratch_copy(model).train()
        weights = [p for n, p in net.named_parameters() if "weight" in n]
        if not weights:
            raise ValueError("ntk_cond differentiates parameters named '*weight*', and this model has none")
        for w in weights:
            w.requires_grad_(True)
        logits = logits_of(net(x))
        if not logits.requires_grad:
            return math.nan
        rows = []
        for i in range(x.shape[0]):
            grads = torch.autograd.grad(logits[i].sum(), weights, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(w)).reshape(-1)
                                   for w, g in zip(weights, grads)]))
        return ntk_condition_number(torch.stack(rows))


def count_linear_regions(codes: torch.Tensor) -> int:
    """Distinct rows of ``sign(codes)`` for a (samples, units) matrix of ReLU outputs
    (non-negative, so the sign is the binary code active / inactive)."""
    return count_distinct_rows(codes.detach() > 0)


@register_proxy("linear_regions")
class LinearRegions(Proxy):
    """Number of distinct ReLU activation patterns among the batch's images."""

    higher_is_better = True
    needs_data = True
    default_batch_size = 1000

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "linear_regions")
        net = scratch_copy(model).train()
        relus = relu_modules(net, "linear_regions")
        feats: list[torch.Tensor] = []

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() == 4:
                feats.append((out.detach() > 0).reshape(out.shape[0], -1))

        with forward_hooks(relus, hook):
            with torch.no_grad():
                net(x)
        if not feats:
            raise ValueError("linear_regions found no nn.ReLU applied to a 4-d feature map in this model")
        return float(count_distinct_rows(torch.cat(feats, dim=1)))


def _te_nas(**kwargs) -> Ensemble:
    """TE-NAS's rank combination of ``ntk_cond`` and ``linear_regions``."""
    return Ensemble(["ntk_cond", "linear_regions"], **kwargs)


register_proxy("te_nas", _te_nas)
