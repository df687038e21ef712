"""AZ-NAS (Lee & Ham, CVPR 2024): four complementary proxies and their log-rank aggregate.

The network is read as a chain of blocks: its stem and then each of its cells
(``model.stem`` and ``model.cells``, the layout of the NAS-Bench-201 and DARTS networks).
With ``f_0, ..., f_L`` the block outputs on a batch of Gaussian inputs:

* **expressivity** ``sum_l H(f_l)``: ``H`` is the entropy of the normalised eigenvalues of
  the channel covariance of ``f_l`` (all pixels of all images as samples). Isotropic
  features (all directions used) have high entropy.
* **progressivity** ``min_l (H(f_l) - H(f_{l-1}))``: expressivity should grow with depth.
* **trainability** ``mean_l (2 - s_l - 1/s_l)`` where ``s_l`` is the largest singular value
  of the block's Jacobian, estimated from a random +-1 backward signal: ``g_in = J^T g_out``
  and ``M = g_in^T g_out / n`` (pixels of the input block folded into channels with
  pixel-unshuffle where the block down-samples). Highest (0) when ``s_l = 1``: gradients
  neither explode nor vanish. A block whose input gradient equals its output signal
  (an identity block) scores ``-inf``, as in the reference.
* **complexity**: FLOPs (:func:`~ghnas.proxies.size.count_flops`).

The AZ-NAS score is ``sum_m log(rank_m / n)``, ``rank_m`` in 1..n the ascending rank of
the architecture under proxy ``m`` among the ``n`` scored together: a set-level aggregate,
registered as the ensemble ``'az_nas'``: it ranks over the architectures of one call of
:func:`ghnas.proxies.score`, or over everything scored so far in a search or an
integration (:class:`~ghnas.proxies.ensemble.SetScores`).

Facts matched to the authors' code (cvlab-yonsei/AZ-NAS, NAS-Bench-201 ``tss`` scripts and
``ZeroShotProxy/compute_az_nas_score.py``): Gaussian inputs (AZ-NAS is not among their
"real input" metrics), He-normal fan-in re-initialisation, network in train mode, stem and
every cell output as features, entropy with ``+1e-8`` inside the log, ``-s - 1/(s + 1e-6) + 2``,
NaN mapped to ``-inf``. Batch size 64 (their NAS-Bench-201 loader). We clamp eigenvalues
at 0 before normalising (round-off can make them slightly negative, which would make the
log undefined).

The three feature proxies share one forward/backward: scoring the same network (same
weights, same settings) again reuses the result, so ``'az_nas'`` costs one evaluation.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import batch_or_gaussian, first_tensor, kaiming_fan_in_init, seeded
from .base import Batch, Proxy, model_device, register_proxy, scratch_copy, forward_hooks
from .ensemble import Ensemble, log_rank_aggregate  # noqa: F401 (re-exported)
from .size import count_flops

__all__ = ["AZExpressivity", "AZProgressivity", "AZTrainability", "AZComplexity", "AZNAS",
           "az_statistics", "log_rank_aggregate", "feature_entropy", "block_trainability"]

# trainability first: an ensemble scores member by member, and trainability's full pass
# (forward and backward) is memoised, so expressivity and progressivity then read it
# instead of running a forward pass of their own
MEMBERS = ("az_trainability", "az_expressivity", "az_progressivity", "az_complexity")


def block_modules(model: nn.Module) -> list[nn.Module]:
    """``[model.stem, *model.cells]``, the chain of blocks AZ-NAS reads features from."""
    stem, cells = getattr(model, "stem", None), getattr(model, "cells", None)
    if not isinstance(stem, nn.Module) or not isinstance(cells, (nn.ModuleList, nn.Sequential)) \
            or len(cells) == 0:
        raise ValueError(f"AZ-NAS reads features after a network's stem and each of its cells: it "
                         f"needs attributes .stem (a module) and .cells (a non-empty ModuleList), "
                         f"which {type(model).__name__} does not have")
    return [stem, *cells]


def feature_entropy(feature: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance of a (B, C, H, W) map."""
    if feature.dim() != 4:
        raise ValueError(f"AZ-NAS features must be (B, C, H, W), got shape {tuple(feature.shape)}")
    b, c, h, w = feature.shape
    f = feature.detach().permute(0, 2, 3, 1).reshape(b * h * w, c).to(torch.float64)
    f = f - f.mean(dim=0, keepdim=True)
    sigma = f.T @ f / f.shape[0]
    s = torch.linalg.eigvalsh(sigma).clamp_min(0.0)
    total = s.sum()
    if not total > 0:
        return math.nan  # constant features: no direction at all
    p = s / total
    return float(-(p * torch.log(p + 1e-8)).sum())


def block_trainability(f_in: torch.Tensor, f_out: torch.Tensor) -> float:
    """``2 - s - 1/(s + 1e-6)`` for the largest singular value ``s`` of the block Jacobian,
    estimated with a Rademacher backward signal (draws from the current torch RNG)."""
    g_out = torch.bernoulli(torch.full_like(f_out, 0.5)) * 2 - 1
    if not (f_out.requires_grad and f_in.requires_grad):
        g_in = None
    else:
        (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)  # the output does not depend on this input
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -math.inf
    if g_in.shape[2:] != g_out.shape[2:]:
        stride = g_in.shape[2] // g_out.shape[2]
        if stride < 1 or g_in.shape[2] != stride * g_out.shape[2] or g_in.shape[3] != stride * g_out.shape[3]:
            raise ValueError(f"AZ-NAS trainability: cannot align block input {tuple(g_in.shape)} "
                             f"with output {tuple(g_out.shape)}")
        g_in = F.pixel_unshuffle(g_in, stride)
    bo, co, ho, wo = g_out.shape
    a = g_in.permute(0, 2, 3, 1).reshape(-1, g_in.shape[1]).to(torch.float64)
    b = g_out.permute(0, 2, 3, 1).reshape(-1, co).to(torch.float64)
    s = float(torch.linalg.svdvals(a.T @ b / (bo * ho * wo)).max())
    return -s - 1.0 / (s + 1e-6) + 2.0


_MEMO: "OrderedDict[str, dict[str, float]]" = OrderedDict()
_MEMO_SIZE = 50_000  # whole benchmark sets: an ensemble scores member by member


def _digest(model: nn.Module, settings: dict[str, Any]) -> str:
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    h.update(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


STATISTICS = ("expressivity", "progressivity", "trainability")


def az_statistics(model: nn.Module, batch_size: int = 64, input_shape: Sequence[int] = (3, 32, 32),
                  init: bool = True, seed: int = 0, batches: Sequence[Batch] | None = None,
                  need: Sequence[str] = STATISTICS) -> dict[str, float]:
    """Expressivity, progressivity and trainability of ``model`` (one forward and backward).

    The model is not modified (a scratch copy is re-initialised and run). Results for the
    same weights and settings are memoised. ``need`` without ``'trainability'`` runs the
    forward pass only, without autograd (a third of the time on DARTS networks); the
    features, and so the entropies, are the same. A forward-only entry asked later for
    trainability runs the full pass, so ask for trainability first when all three are
    wanted (as :class:`AZNAS` does): then the three proxies cost one evaluation.
    """
    bad = sorted(set(need) - set(STATISTICS))
    if bad:
        raise ValueError(f"unknown AZ-NAS statistic(s) {bad}; valid: {', '.join(STATISTICS)}")
    blocks = block_modules(model)
    settings = {"batch_size": int(batch_size), "input_shape": [int(s) for s in input_shape],
                "init": bool(init), "seed": int(seed),
                "shape": None if not batches else list(batches[0][0].shape[1:])}
    key = _digest(model, settings)
    if key in _MEMO and set(need) <= set(_MEMO[key]):
        _MEMO.move_to_end(key)
        return dict(_MEMO[key])
    with_grad = "trainability" in need
    net = scratch_copy(model).train()
    blocks = block_modules(net)
    feats: list[torch.Tensor] = []

    def hook(mod: nn.Module, inp: tuple, out) -> None:
        t = first_tensor(out)
        if t is None:
            raise ValueError(f"AZ-NAS: block {type(mod).__name__} returned no tensor")
        feats.append(t)

    with forward_hooks(blocks, hook):
        with seeded(seed, model_device(net)), torch.set_grad_enabled(with_grad):
            if init:
                kaiming_fan_in_init(net)
            x, _ = batch_or_gaussian(net, batches, batch_size, input_shape)
            net(x)
            entropies = np.array([feature_entropy(f) for f in feats])
            train_scores = [block_trainability(feats[i - 1], feats[i])
                            for i in reversed(range(1, len(feats)))] if with_grad else []
    stats = {"expressivity": float(np.sum(entropies)),
             "progressivity": float(np.min(entropies[1:] - entropies[:-1])) if len(entropies) > 1 else math.nan}
    if with_grad:
        stats["trainability"] = float(np.mean(train_scores)) if train_scores else math.nan
    out = {**_MEMO.get(key, {}), **{k: (-math.inf if math.isnan(v) else v) for k, v in stats.items()}}
    _MEMO[key] = dict(out)
    _MEMO.move_to_end(key)
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return out


class _AZFeatureProxy(Proxy):
    higher_is_better = True
    needs_data = False
    default_batch_size = 64
    _stat: str = ""

    def __init__(self, batch_size: int = 64, input_shape: Sequence[int] = (3, 32, 32),
                 init: bool = True, seed: int = 0):
        if int(batch_size) < 2:
            raise ValueError(f"AZ-NAS needs batch_size >= 2, got {batch_size}")
        self.batch_size = int(batch_size)
        self.input_shape = [int(s) for s in input_shape]
        self.init = bool(init)
        self.seed = int(seed)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        # inputs are Gaussian: only the image shape of ``batches`` is used
        stats = az_statistics(model, self.batch_size, self.input_shape, self.init, self.seed, batches,
                              need=(self._stat,))
        return stats[self._stat]


@register_proxy("az_expressivity")
class AZExpressivity(_AZFeatureProxy):
    """AZ-NAS expressivity: summed eigenvalue entropy of the block features."""

    _stat = "expressivity"


@register_proxy("az_progressivity")
class AZProgressivity(_AZFeatureProxy):
    """AZ-NAS progressivity: the smallest entropy increase from one block to the next."""

    _stat = "progressivity"


@register_proxy("az_trainability")
class AZTrainability(_AZFeatureProxy):
    """AZ-NAS trainability: mean of ``2 - s - 1/s`` over blocks (``s``: Jacobian spectral norm)."""

    _stat = "trainability"


@register_proxy("az_complexity")
class AZComplexity(Proxy):
    """AZ-NAS complexity: millions of FLOPs for one input (the ``flops`` proxy under its AZ-NAS name)."""

    higher_is_better = True
    needs_data = False

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32)):
        self.input_shape = [int(s) for s in input_shape]

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        shape = tuple(batches[0][0].shape[1:]) if batches else tuple(self.input_shape)
        return count_flops(model, shape) / 1e6


class AZNAS(Ensemble):
    """The AZ-NAS score: log-rank aggregate of its four proxies over the scored set."""

    def __init__(self, members: Sequence[str | Proxy] = MEMBERS):
        super().__init__(members, method="log_rank")

    @property
    def label(self) -> str:
        return "az_nas"


register_proxy("az_nas", AZNAS)
