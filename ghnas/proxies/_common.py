"""Small helpers shared by the post-2021 proxies (MeCo, ZiCo, SWAP, AZ-NAS, TE-NAS, Zen).

Private: the proxies' own modules are the public surface.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .base import Batch, logits_of, model_device, one_batch, scratch_copy

__all__ = ["seeded", "gaussian_init", "kaiming_fan_in_init", "relu_modules", "gaussian_batch",
           "batch_or_gaussian", "split_batches", "first_tensor", "count_distinct_rows", "input_jacobian"]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` and restore the global RNG afterwards,
    so a proxy that draws random numbers (inputs, re-initialisation) is a function of its
    ``seed`` setting and of the network only, whatever was scored before it."""
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _reinit(model: nn.Module, init_weight) -> nn.Module:
    """Conv and linear weights by ``init_weight``, zero biases, norm layers weight 1 and bias 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                init_weight(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model


def gaussian_init(model: nn.Module) -> nn.Module:
    """Zen-NAS / SWAP re-initialisation, in place: conv and linear weights ~ N(0, 1), biases 0,
    norm layers weight 1 and bias 0."""
    return _reinit(model, nn.init.normal_)


def kaiming_fan_in_init(model: nn.Module) -> nn.Module:
    """AZ-NAS re-initialisation, in place: He-normal (fan-in, ReLU gain) conv and linear
    weights, zero biases, norm layers weight 1 and bias 0."""
    return _reinit(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"))


def relu_modules(model: nn.Module, proxy: str) -> list[nn.Module]:
    """The ``nn.ReLU`` modules of ``model``; an error naming ``proxy`` when there are none."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{proxy} reads the outputs of nn.ReLU modules, and this model has none "
                         "(functional relu calls cannot be observed)")
    return relus


def gaussian_batch(n: int, shape: Sequence[int], device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` standard-normal inputs of ``shape`` (draws from the current torch RNG)."""
    return torch.randn((int(n), *[int(s) for s in shape]), device=device, dtype=dtype)


def batch_or_gaussian(model: nn.Module, batches: Sequence[Batch] | None, n: int,
                      input_shape: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The image shape of ``batches`` when given (else ``input_shape``) and ``n`` Gaussian inputs
    of that shape on the model's device (the random inputs of Zen-NAS and AZ-NAS)."""
    shape = tuple(batches[0][0].shape[1:]) if batches else tuple(int(s) for s in input_shape)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return gaussian_batch(n, shape, model_device(model), dtype), shape


def split_batches(batches: Sequence[Batch] | None, n_splits: int, proxy: str) -> list[Batch]:
    """``n_splits`` batches: the given ones when there are at least that many, else the
    concatenated batch cut into ``n_splits`` equal parts (each needs two or more images)."""
    if batches and len(batches) >= n_splits:
        return list(batches[:n_splits])
    x, y = one_batch(batches, proxy)
    if x.shape[0] < 2 * n_splits:
        raise ValueError(f"{proxy} needs at least {2 * n_splits} images to make {n_splits} batches, "
                         f"got {x.shape[0]}")
    size = x.shape[0] // n_splits
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n_splits)]


def count_distinct_rows(bits: torch.Tensor) -> int:
    """Number of distinct rows of a boolean (rows, columns) matrix.

    The columns are packed 52 to a word first (a float64 matrix product, exact below 2^53),
    and the words folded into one row id with 1-d ``unique``: far faster than
    ``unique(dim=0)`` on the wide or tall matrices of SWAP and TE-NAS.
    """
    bits = bits.to(torch.bool)
    rows, cols = bits.shape
    if rows == 0:
        return 0
    if cols == 0:
        return 1
    width = min(52, cols)
    pad = (-cols) % width
    if pad:
        bits = torch.cat([bits, bits.new_zeros((rows, pad))], dim=1)
    weights = 2.0 ** torch.arange(width, dtype=torch.float64, device=bits.device)
    words = (bits.reshape(rows, -1, width).to(torch.float64) @ weights).to(torch.int64)
    # ids < rows, so id * (rows + 1) + next id stays within int64
    _, key = torch.unique(words[:, 0], return_inverse=True)
    for j in range(1, words.shape[1]):
        _, nxt = torch.unique(words[:, j], return_inverse=True)
        _, key = torch.unique(key * (rows + 1) + nxt, return_inverse=True)
    return int(key.max()) + 1


def first_tensor(output: Any) -> torch.Tensor | None:
    """A module output's tensor: itself, or the first tensor of a tuple/list (else None).

    Not :func:`ghnas._util.first_tensor`: this reads the outputs of every inner module in
    forward hooks, where "no tensor" is normal (skip the module), not an error."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def finite_or_nan(value: float) -> float:
    """``value`` when finite, else ``nan`` (the NaN policy of ``score()`` ranks it last)."""
    return value if math.isfinite(value) else math.nan


def input_jacobian(model: nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """Per-image gradients of the summed logits w.r.t. the input, as a float64 (B, D)
    array (jacob_cov, epe_nas), from a scratch copy in train mode; ``None`` when the
    output does not depend on the input (no path through the network)."""
    net = scratch_copy(model).train()
    x = x.detach().clone().requires_grad_(True)
    out = logits_of(net(x))
    if not out.requires_grad:
        return None
    (jac,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return None if jac is None else jac.reshape(jac.shape[0], -1).double().cpu().numpy()
