"""Building blocks shared by the search spaces' network builders."""
from __future__ import annotations

import torch
from torch import nn


class ReLUConvBN(nn.Module):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d, as ``op.0``, ``op.1``, ``op.2``.

    The parameter names match the DARTS and NAS-Bench-201 reference code, so graphs and
    state dicts line up with theirs.
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class AvgPool2D(torch.autograd.Function):
    """Average pooling over k x k windows with padding, not counting padded pixels
    (``count_include_pad=False``), computed as a depthwise convolution with a box kernel
    times the inverse pixel count of each window.

    On a CPU this is about 4x faster, forward and backward, than torch's own average
    pooling at the sizes of the cells' feature maps, and it equals it to rounding. The
    class is named after torch's op on purpose: autograd calls its node
    ``AvgPool2DBackward``, and it records the pooling settings as torch does, so graph
    extraction (:mod:`ghnas.graph`) sees the same average-pooling node.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
        box, inv = _box_and_inverse_count(x, kernel, stride, padding)
        return torch.nn.functional.conv2d(x, box, stride=stride, padding=padding, groups=x.shape[1]) * inv

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, kernel, stride, padding = inputs
        ctx.shape, ctx.settings = tuple(x.shape), (kernel, stride, padding)
        ctx._saved_kernel_size, ctx._saved_stride = (kernel, kernel), (stride, stride)
        ctx._saved_padding, ctx._saved_ceil_mode, ctx._saved_count_include_pad = (padding, padding), False, False

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kernel, stride, padding = ctx.settings
        box, inv = _box_and_inverse_count(grad.new_empty(ctx.shape), kernel, stride, padding)
        gx = torch.nn.grad.conv2d_input(ctx.shape, box, grad * inv, stride=stride, padding=padding,
                                        groups=ctx.shape[1])
        return gx, None, None, None


_BOX_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _box_and_inverse_count(x: torch.Tensor, kernel: int, stride: int, padding: int):
    key = (x.shape[1], x.shape[2], x.shape[3], kernel, stride, padding, x.dtype, x.device)
    hit = _BOX_CACHE.get(key)
    if hit is None:
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        count = torch.nn.functional.conv2d(ones, torch.ones(1, 1, kernel, kernel, dtype=x.dtype, device=x.device),
                                           stride=stride, padding=padding)
        hit = (torch.ones(c, 1, kernel, kernel, dtype=x.dtype, device=x.device), 1.0 / count)
        if len(_BOX_CACHE) < 256 and x.device.type != "meta":
            _BOX_CACHE[key] = hit
    return hit


class AvgPool(nn.AvgPool2d):
    """``nn.AvgPool2d(k, stride, padding, count_include_pad=False)`` on the fast path of
    :class:`AvgPool2D` (same module type, state and repr for everything else)."""

    def __init__(self, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(kernel_size, stride=stride, padding=padding, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.device.type == "meta":
            return super().forward(x)
        return AvgPool2D.apply(x, int(self.kernel_size), int(self.stride), int(self.padding))
