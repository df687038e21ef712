"""Size proxies: number of parameters and FLOPs (data-free, deterministic).

Both are reported in millions, the unit of NAS-Bench-201 and of NASLib's ``params`` /
``flops`` columns. Bigger networks tend to train to higher accuracy in small cell spaces,
which makes these two strong baselines there (and ``higher_is_better`` is ``True``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .base import Batch, Proxy, logits_of, model_device, register_proxy, scratch_copy, forward_hooks

__all__ = ["Params", "Flops", "count_flops"]


@register_proxy("params")
class Params(Proxy):
    """Number of parameters in millions (every parameter tensor, shared ones counted once)."""

    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e6


def count_flops(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32),
                elementwise: bool = True, bias: bool = True) -> int:
    """Operations of one forward pass of a single image of ``input_shape``: ghnas's one
    FLOP counter (the ``flops`` proxy and the ``flops`` of :mod:`ghnas.archset` files).

    Counted per call of each layer (so a layer used twice counts twice):

    * convolution: ``kh * kw * C_in / groups`` multiply-accumulates per output element,
      plus one per output element for a bias (with ``bias=True``); linear:
      ``in_features`` (+ 1 for a bias);
    * with ``elementwise=True`` (default) also 2 per element for batch norm (scale and
      shift), 1 per element for ReLU, ``k * k`` per output element for average/max
      pooling and 1 per input element for adaptive pooling.

    The default reproduces NASLib's ``flops`` on NAS-Bench-201 to within 0.002 MFLOPs
    (checked on its 491-architecture development set); ``elementwise=False`` gives
    conv/linear multiply-accumulates, and with ``bias=False`` as well the bare
    multiply-accumulates NAS benchmarks report (what :mod:`ghnas.archset` stores).
    Additions of branches are not counted.
    The model runs in eval mode on a copy.
    """
    net = scratch_copy(model).eval()
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        n_out = out.numel() // out.shape[0]
        if isinstance(mod, nn.Linear):
            total += n_out * (mod.in_features + (bias and mod.bias is not None))
        elif isinstance(mod, nn.modules.conv._ConvNd):
            per_out = (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            total += n_out * (per_out + (bias and mod.bias is not None))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            total += 2 * n_out
        elif isinstance(mod, nn.ReLU):
            total += n_out
        elif isinstance(mod, (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd)):
            k = mod.kernel_size
            total += n_out * (math.prod(k) if isinstance(k, tuple) else k ** (out.dim() - 2))
        elif isinstance(mod, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
            total += inp[0].numel() // inp[0].shape[0]

    kinds: tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd)
    if elementwise:
        kinds += (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.modules.pooling._AvgPoolNd,
                  nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                  nn.modules.pooling._AdaptiveMaxPoolNd)
    with forward_hooks((m for m in net.modules() if isinstance(m, kinds)), hook):
        dtype = next((p.dtype for p in net.parameters()), torch.float32)
        x = torch.zeros((1, *input_shape), device=model_device(net), dtype=dtype)
        with torch.no_grad():
            logits_of(net(x))
    return total


@register_proxy("flops")
class Flops(Proxy):
    """Millions of operations for one image of ``input_shape`` (see :func:`count_flops`)."""

    higher_is_better = True
    needs_data = False

    def __init__(self, input_shape: Sequence[int] = (3, 32, 32), elementwise: bool = True):
        self.input_shape = [int(s) for s in input_shape]
        self.elementwise = bool(elementwise)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None = None) -> float:
        shape = tuple(batches[0][0].shape[1:]) if batches else tuple(self.input_shape)
        return count_flops(model, shape, self.elementwise) / 1e6
