"""EPE-NAS (Lopes et al., ICANN 2021): per-class correlation of input Jacobians.

``J[i]`` is the gradient of the sum of image ``i``'s logits with respect to the image
(network in train mode). For each class ``c`` present in the batch, with ``R_c`` the
correlation matrix of the Jacobians of its images, ``s_c = sum_ij log(|R_c[i, j]| + k)``
with ``k = 1e-5``; the score is ``sum_c |s_c|`` (the authors' rule for up to 100 classes).
Jacobians that are uncorrelated within a class give large ``|s_c|``.

Facts matched to NASLib's ``epe_nas`` measure (taken from the authors' repository):
``y.backward(ones)`` on the logits, one batch, per-class ``np.corrcoef`` of the flattened
Jacobians, a class with one image contributing ``log(1 + k)``. A constant Jacobian row
(the output does not depend on the input) makes a correlation undefined: ``nan``, ranked
last (NASLib stores nan too).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch.nn as nn

from ._common import input_jacobian
from .base import Batch, Proxy, one_batch, register_proxy

__all__ = ["EPENAS", "epe_nas_score"]


def epe_nas_score(jacobian: np.ndarray, labels: np.ndarray, k: float = 1e-5) -> float:
    """The EPE-NAS formula for a (B, D) Jacobian matrix and B integer labels (<= 100 classes)."""
    labels = np.asarray(labels).reshape(-1)
    if jacobian.shape[0] != labels.shape[0]:
        raise ValueError(f"{jacobian.shape[0]} Jacobian rows but {labels.shape[0]} labels")
    total = 0.0
    for c in np.unique(labels):
        rows = jacobian[labels == c]
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.atleast_2d(np.corrcoef(rows)) if rows.shape[0] > 1 else np.ones((1, 1))
        if not np.all(np.isfinite(corr)):
            return math.nan
        total += abs(float(np.sum(np.log(np.abs(corr) + k))))
    return total


@register_proxy("epe_nas")
class EPENAS(Proxy):
    """Sum over classes of ``|sum log(|corr| + 1e-5)|`` of the input Jacobians."""

    higher_is_better = True
    needs_data = True

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        x, y = one_batch(batches, "epe_nas")
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(f"epe_nas groups images by integer class label; got labels of shape "
                             f"{tuple(y.shape)} and dtype {y.dtype}")
        jac = input_jacobian(model, x)
        return math.nan if jac is None else epe_nas_score(jac, y.cpu().numpy())
