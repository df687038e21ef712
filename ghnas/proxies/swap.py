"""SWAP-Score (Peng et al., ICLR 2024): sample-wise activation patterns.

Every ReLU output of a batch of ``B`` images is binarised (``sign``: unit active or not)
and all ReLUs are concatenated into a (B, units) matrix. Transposed, each *unit* has a
pattern over the ``B`` samples; the score is the number of distinct such patterns
(at most ``min(units, 2^B)``). It measures how many different ways the network splits
the batch, a finer-grained expressivity than NASWOT's per-sample codes.

Facts matched to the authors' code (pym1024/SWAP ``src/metrics/swap.py`` and
``correlation.py``): hooks on ``nn.ReLU`` modules with 4-d inputs, ``torch.sign`` of the
output, ``unique`` over units; 16 input images (``--input_samples 16``); before each of
``--repeats 32`` evaluations the network is re-initialised with N(0, 1) conv/linear
weights (``network_weight_gaussian_init``) and the score is the mean over repeats; the
forward runs without gradients in the network's default (train) mode.

Regularised SWAP multiplies by ``exp(-(K - mu)^2 / sigma)`` with ``K`` the parameter
count in thousands (the authors' ``count_parameters_in_MB(model) * 1e3``); ``mu`` and
``sigma`` are set per search space in the paper. Both default to ``None`` (plain SWAP).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ._common import count_distinct_rows, gaussian_init, relu_modules, seeded
from .base import Batch, Proxy, model_device, one_batch, register_proxy, scratch_copy, forward_hooks

__all__ = ["SWAP", "count_patterns"]


def count_patterns(activations: torch.Tensor) -> int:
    """Distinct columns of ``sign(activations)`` for a (samples, units) matrix of ReLU
    outputs (non-negative, so the sign is the binary code active / inactive)."""
    return count_distinct_rows((activations.detach() > 0).T)


@register_proxy("swap")
class SWAP(Proxy):
    """Number of distinct sample-wise ReLU activation patterns (mean over ``repeats`` inits)."""

    higher_is_better = True
    needs_data = True
    default_batch_size = 16

    def __init__(self, repeats: int = 32, gaussian_init: bool = True, mu: float | None = None,
                 sigma: float | None = None, seed: int = 0):
        if int(repeats) < 1:
            raise ValueError(f"swap needs repeats >= 1, got {repeats}")
        if (mu is None) != (sigma is None):
            raise ValueError("swap regularisation needs both mu and sigma (or neither)")
        if sigma is not None and not float(sigma) > 0:
            raise ValueError(f"swap sigma must be > 0, got {sigma}")
        self.repeats = int(repeats)
        self.gaussian_init = bool(gaussian_init)
        self.mu = None if mu is None else float(mu)
        self.sigma = None if sigma is None else float(sigma)
        self.seed = int(seed)

    def regular_factor(self, model: nn.Module) -> float:
        """``exp(-(K - mu)^2 / sigma)`` with ``K`` thousands of parameters (1 when unregularised)."""
        if self.mu is None or self.sigma is None:
            return 1.0
        k = sum(p.numel() for p in model.parameters()) / 1e3
        return math.exp(-((k - self.mu) ** 2) / self.sigma)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "swap")
        net = scratch_copy(model).train()
        relus = relu_modules(net, "swap")
        feats: list[torch.Tensor] = []

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() == 4:
                feats.append((out.detach() > 0).reshape(out.shape[0], -1))

        counts: list[int] = []
        with forward_hooks(relus, hook):
            with seeded(self.seed, model_device(net)), torch.no_grad():
                # without re-initialisation every repeat would see the same network
                for _ in range(self.repeats if self.gaussian_init else 1):
                    if self.gaussian_init:
                        gaussian_init(net)
                    feats.clear()
                    net(x)
                    if not feats:
                        raise ValueError("swap found no nn.ReLU applied to a 4-d feature map in this model")
                    counts.append(count_distinct_rows(torch.cat(feats, dim=1).T))
        return float(sum(counts) / len(counts)) * self.regular_factor(model)
