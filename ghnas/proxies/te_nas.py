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
  ReLU output) among the inputs, i.e. how many linear regions of the network they fall
  into; higher is better. TE-NAS counts them on random 3x3 crops of one random colour
  channel of CIFAR-10 images (``input_size=(1000, 1, 3, 3)``, 3 batches of 1,000) fed to
  a thin copy of the network (C=1, one or two cells, no stem). Ours takes the same crops
  (``patch=3``; 4 on DARTS, whose reduction cells need even sizes; the channel is
  repeated over the network's three input channels, which is a stem seeing one channel)
  of the images given (one batch), on the network given: pick the batch and the network
  size with ``batch_size`` and ``build_kwargs``. On whole 32x32 images (``patch=None``)
  every image of a batch lands in a region of its own on any network of our spaces, even
  at C=1, so the count saturates at the batch size and ranks nothing.
* ``te_nas`` -- TE-NAS's combination: the mean of the two proxies' ranks over the scored
  set (a rank ensemble, like ``'vote:ntk_cond,linear_regions'``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import count_distinct_rows, relu_modules
from .base import (Batch, Proxy, forward_hooks, logits_of, one_batch, register_proxy, scratch_copy,
                   space_name)
from .ensemble import Ensemble

__all__ = ["NTKCondition", "LinearRegions", "ntk_condition_number", "count_linear_regions", "random_patches"]


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


#: the crop size each space's networks take when ``patch`` is not given (DARTS's
#: factorised reductions halve the size twice and need it even: 4 -> 2 -> 1)
SPACE_PATCH = {"darts": 4}


def random_patches(x: torch.Tensor, patch: int, one_channel: bool, seed: int) -> torch.Tensor:
    """TE-NAS's inputs: one random ``patch`` x ``patch`` crop of each image (and, with
    ``one_channel``, one random channel of it, repeated over the image's channels), drawn
    from a generator seeded by ``seed``."""
    n, c, h, w = x.shape
    if patch > min(h, w):
        raise ValueError(f"linear_regions: patch={patch} is larger than the {h}x{w} images")
    g = torch.Generator().manual_seed(int(seed))
    top = torch.randint(0, h - patch + 1, (n,), generator=g)
    left = torch.randint(0, w - patch + 1, (n,), generator=g)
    offs = torch.arange(patch)
    rows = (top[:, None] + offs)[:, :, None].expand(n, patch, patch).to(x.device)
    cols = (left[:, None] + offs)[:, None, :].expand(n, patch, patch).to(x.device)
    crops = x[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if one_channel:
        pick = torch.randint(0, c, (n,), generator=g).to(x.device)
        crops = crops[torch.arange(n, device=x.device), pick][:, None].expand(n, c, patch, patch)
    return crops.contiguous()


@register_proxy("linear_regions")
class LinearRegions(Proxy):
    """Number of distinct ReLU activation patterns among TE-NAS's random image crops.

    Args:
        patch: side of the random crops (TE-NAS: 3; ``None``: the whole images). A proxy
            made for a space (``get_proxy(..., space=)``, ``score()``) with patch 3 takes
            the space's size instead where it needs another (:data:`SPACE_PATCH`).
        one_channel: feed one random colour channel of each crop (TE-NAS), repeated over
            the input channels.
        seed: seed of the crop positions and channels.
    """

    higher_is_better = True
    needs_data = True
    default_batch_size = 1000

    def __init__(self, patch: int | None = 3, one_channel: bool = True, seed: int = 0):
        if patch is not None and int(patch) < 1:
            raise ValueError(f"linear_regions: patch must be >= 1 or None, got {patch}")
        self.patch = None if patch is None else int(patch)
        self.one_channel = bool(one_channel)
        self.seed = int(seed)

    def for_space(self, space: object) -> "LinearRegions":
        """This proxy with the crop size ``space``'s networks accept (:data:`SPACE_PATCH`)
        where the crop size is TE-NAS's 3 and the space needs another."""
        want = SPACE_PATCH.get(space_name(space))
        if want is None or self.patch != 3:
            return self
        return LinearRegions(patch=want, one_channel=self.one_channel, seed=self.seed)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "linear_regions")
        if self.patch is not None:
            x = random_patches(x, self.patch, self.one_channel, self.seed)
        net = scratch_copy(model).train()
        relus = relu_modules(net, "linear_regions")
        feats: list[torch.Tensor] = []

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() == 4:
                feats.append((out.detach() > 0).reshape(out.shape[0], -1))

        with forward_hooks(relus, hook):
            with torch.no_grad():
                try:
                    net(x)
                except RuntimeError as e:
                    if self.patch is None:
                        raise
                    raise ValueError(f"linear_regions: this network cannot run on {self.patch}x{self.patch} "
                                     f"crops ({e}); DARTS networks need an even size (patch=4, what "
                                     "space='darts' gives), patch=None feeds whole images") from e
        if not feats:
            raise ValueError("linear_regions found no nn.ReLU applied to a 4-d feature map in this model")
        return float(count_distinct_rows(torch.cat(feats, dim=1)))


def _te_nas(**kwargs) -> Ensemble:
    """TE-NAS's rank combination of ``ntk_cond`` and ``linear_regions``."""
    return Ensemble(["ntk_cond", "linear_regions"], **kwargs)


register_proxy("te_nas", _te_nas)
