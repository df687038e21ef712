"""Proxies from "Neural Architecture Search without Training" (Mellor et al.).

* ``naswot`` -- the ICML 2021 version. Each ReLU splits a batch of ``B`` images into
  binary activation codes ``c_i`` (unit active or not). Summed over all ReLUs,
  ``K[i, j] = N_units - hamming(c_i, c_j) = c_i.c_j + (1 - c_i).(1 - c_j)``; the score is
  ``log |det K|``. Networks that keep different images apart have large scores.
  As in the authors' and NASLib's code, codes are read at the input of every ``nn.ReLU``
  module (pre-activation > 0), the network is in train mode (batch statistics) and
  ``slogdet``'s log-magnitude is returned.
* ``jacob_cov`` (alias ``jacov``) -- the first (2020) version, as used by NASLib and
  zero-cost-nas: ``J`` is the gradient of the sum of the logits with respect to each
  input image (network in train mode); with ``lambda`` the eigenvalues of the correlation
  matrix of the ``B`` flattened rows of ``J`` and ``k = 1e-5``, the score is
  ``-sum(log(lambda + k) + 1 / (lambda + k))``.

Degenerate networks: if the logits do not depend on the input, ``J`` has constant rows,
the correlation matrix is undefined and ``jacob_cov`` returns ``nan`` (NASLib stores
-1e8). A singular ``K`` gives ``naswot = -inf``. Both rank such networks last.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ._common import input_jacobian
from .base import Batch, Proxy, forward_hooks, one_batch, register_proxy, scratch_copy

__all__ = ["NASWOT", "JacobCov", "hamming_kernel"]


def hamming_kernel(codes: torch.Tensor) -> torch.Tensor:
    """``K = c c^T + (1 - c)(1 - c)^T`` for binary codes ``c`` of shape (B, units), in float64.

    Computed as ``2 c c^T - s_i - s_j + units`` (``s``: active units per image): one matrix
    product instead of two, in float32 while every sum is an integer float32 holds exactly
    (below 2^24), so ``K`` is bit-identical to the float64 products and 3-4x cheaper.
    """
    c = codes.reshape(codes.shape[0], -1)
    units = c.shape[1]
    c = c.to(torch.float32 if units < 2 ** 24 else torch.float64)
    s = c.sum(dim=1).to(torch.float64)
    return 2.0 * (c @ c.T).to(torch.float64) - s[:, None] - s[None, :] + float(units)


@register_proxy("naswot")
class NASWOT(Proxy):
    """``log|det K|`` of the Hamming kernel of ReLU activation codes (Mellor et al., 2021)."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "naswot")
        net = scratch_copy(model).train()
        relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            raise ValueError("naswot reads the inputs of nn.ReLU modules, and this model has none "
                             "(functional relu calls cannot be observed)")
        K = torch.zeros((x.shape[0], x.shape[0]), dtype=torch.float64, device=x.device)

        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            nonlocal K
            # with inplace=True the input already holds relu(x); (relu(x) > 0) == (x > 0)
            K = K + hamming_kernel(inp[0].detach() > 0)

        with forward_hooks(relus, hook):
            with torch.no_grad():
                net(x)
        _, logabsdet = torch.linalg.slogdet(K.cpu())
        return float(logabsdet)


def jacob_cov_score(jacobian: np.ndarray, k: float = 1e-5) -> float:
    """The jacob_cov formula on a (B, D) matrix of per-image input gradients."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jacobian)
    if not np.all(np.isfinite(corr)):
        return math.nan
    eig = np.linalg.eigvalsh(corr)  # corr is symmetric: real eigenvalues
    with np.errstate(invalid="ignore", divide="ignore"):
        value = -np.sum(np.log(eig + k) + 1.0 / (eig + k))
    return float(value)


@register_proxy("jacob_cov")
class JacobCov(Proxy):
    """Correlation of input Jacobians across a batch (Mellor et al., 2020; NASLib 'jacov')."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, _ = one_batch(batches, "jacob_cov")
        jac = input_jacobian(model, x)
        return math.nan if jac is None else jacob_cov_score(jac)


register_proxy("jacov", JacobCov)
register_proxy("nwot", NASWOT)
