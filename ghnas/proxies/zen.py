"""Zen-score (Lin et al., ICCV 2021, Zen-NAS).

With N(0, 1) weights, a Gaussian input ``x`` and a slightly perturbed ``x' = x + 0.01 e``,
the score is ``log E_i ||f(x_i) - f(x'_i)||_1 + sum_BN log sqrt(mean_c sigma_c^2)``, ``f``
the feature map before global average pooling and ``sigma_c^2`` each batch-norm layer's
per-channel batch variance: the expected gradient norm of the pre-pooling features with
respect to the input, corrected for the rescaling the BN layers hide.

Facts matched to the authors' code (idstcv/ZenNAS ``compute_zen_score.py``; AZ-NAS's
NAS-Bench-201 port reads ``forward_pre_GAP``, i.e. after the last BN-ReLU): Gaussian
re-initialisation (conv/linear N(0, 1), BN weight 1 and bias 0), ``mixup_gamma = 0.01``,
network in train mode, per-image sum of ``|f(x) - f(x')|`` then its mean over the batch,
natural log, mean over ``repeats`` draws (their default 32; batch size 16). The reference
reads BN's ``running_var`` after the two forward passes; with PyTorch's momentum that is
``0.81 + 0.09 v + 0.1 v'`` rather than the batch variance of the paper's definition, so
we take the batch variance ``v`` (unbiased, as BN's running estimate) of the clean pass.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import batch_or_gaussian, gaussian_init, seeded
from .base import Batch, Proxy, model_device, register_proxy, scratch_copy

__all__ = ["ZenScore"]


def _pre_gap_module(model: nn.Module) -> nn.Module:
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise ValueError("zen reads the features before global average pooling, and this model has "
                         "no nn.AdaptiveAvgPool2d")
    return pools[-1]


@register_proxy("zen")
class ZenScore(Proxy):
    """Zen-NAS's expected-gradient-norm score of the pre-pooling features (log scale)."""

    higher_is_better = True
    needs_data = False
    default_batch_size = 16

    def __init__(self, batch_size: int = 16, repeats: int = 32, mixup_gamma: float = 1e-2,
                 input_shape: Sequence[int] = (3, 32, 32), seed: int = 0):
        if int(batch_size) < 2 or int(repeats) < 1 or not float(mixup_gamma) > 0:
            raise ValueError(f"zen needs batch_size >= 2, repeats >= 1 and mixup_gamma > 0; got "
                             f"{batch_size}, {repeats}, {mixup_gamma}")
        self.batch_size = int(batch_size)
        self.repeats = int(repeats)
        self.mixup_gamma = float(mixup_gamma)
        self.input_shape = [int(s) for s in input_shape]
        self.seed = int(seed)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        net = scratch_copy(model).train()
        pool = _pre_gap_module(net)
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        captured: dict[str, torch.Tensor] = {}
        bn_var: dict[int, torch.Tensor] = {}

        def pool_hook(mod: nn.Module, inp: tuple) -> None:
            captured["f"] = inp[0].detach().clone()

        def bn_hook(mod: nn.Module, inp: tuple) -> None:
            if "record" in captured:
                x = inp[0].detach().transpose(0, 1).reshape(inp[0].shape[1], -1)
                bn_var[id(mod)] = x.to(torch.float64).var(dim=1, unbiased=True)

        handles = [pool.register_forward_pre_hook(pool_hook)]
        handles += [m.register_forward_pre_hook(bn_hook) for m in bns]
        values: list[float] = []
        try:
            with seeded(self.seed, model_device(net)), torch.no_grad():
                for _ in range(self.repeats):
                    gaussian_init(net)
                    x, _ = batch_or_gaussian(net, batches, self.batch_size, self.input_shape)
                    x2 = x + self.mixup_gamma * torch.randn_like(x)
                    captured["record"] = torch.ones(())
                    bn_var.clear()
                    net(x)
                    f1 = captured.pop("f")
                    del captured["record"]
                    net(x2)
                    f2 = captured.pop("f")
                    diff = (f1 - f2).abs().to(torch.float64).reshape(f1.shape[0], -1).sum(dim=1).mean()
                    log_bn = sum(0.5 * math.log(m) if m > 0 else -math.inf
                                 for m in (float(v.mean()) for v in bn_var.values()))
                    values.append(math.log(float(diff)) + log_bn if diff > 0 else -math.inf)
        finally:
            for h in handles:
                h.remove()
        value = sum(values) / len(values)
        return value if not math.isnan(value) else math.nan
