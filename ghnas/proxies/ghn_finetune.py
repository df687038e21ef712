"""A low-cost GHN proxy: a few SGD steps from the GHN's prediction, scored after them.

The zero-cost GHN proxy (:mod:`ghnas.proxies.ghn`) scores the predicted parameters as
they are. Its ranking swings with the checkpoint and the images, partly because the
predicted networks all sit close to chance and differ by less than the noise. A handful
of gradient steps from the prediction moves each network by how trainable it is from
there, which can amplify real differences between architectures at a small cost (each
step is one forward and backward pass on a small batch).

The images given to the proxy are split: the first ``train_images`` are the training
batch (full-batch SGD, no augmentation, so the score is deterministic), the rest are
scored with the one evaluator of predicted networks
(:func:`ghnas.ghn.evaluate.evaluate_predicted`). Batch norm uses batch statistics
throughout, as for predicted networks. The model itself is never modified: the steps act
on a copy of the predicted tensors through ``torch.func.functional_call``.

Example::

    >>> from ghnas.proxies import score
    >>> from ghnas.proxies.ghn_finetune import GHNFinetuneProxy
    >>> table = score(archs, 'nb201', GHNFinetuneProxy(steps=10), data='cifar10',
    ...               batch_size=564)                                # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, register_proxy
from .ghn import GHNProxy

__all__ = ["GHNFinetuneProxy", "finetune_predicted"]


def finetune_predicted(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, steps: int, lr: float, momentum: float = 0.9,
                       grad_clip: float | None = 5.0) -> dict[str, torch.Tensor]:
    """``steps`` full-batch SGD steps on ``(x, y)`` starting from ``params``.

    Returns new tensors (``params`` and ``model`` are left as they were). A step whose loss
    is not finite stops the run and returns parameters filled with NaN, so that every
    metric of the proxy scores the network as degenerate.
    """
    from ghnas.ghn.evaluate import logits

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(y) < 2:
        raise ValueError(f"the fine-tuning batch needs at least 2 images (batch norm), got {len(y)}")
    p = {k: v.detach().clone().float().requires_grad_(True) for k, v in params.items()}
    if steps == 0:
        return {k: v.detach() for k, v in p.items()}
    opt = torch.optim.SGD(list(p.values()), lr=lr, momentum=momentum)
    # copies of the buffers: training-mode batch norm would update the model's running stats
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()  # batch statistics, as predicted networks are evaluated
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = F.cross_entropy(logits(model, {**buffers, **p}, x).float(), y)
                if not torch.isfinite(loss):
                    return {k: torch.full_like(v, float("nan")) for k, v in p.items()}
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    nn.utils.clip_grad_norm_(list(p.values()), grad_clip)
                opt.step()
    finally:
        model.train(was_training)
    return {k: v.detach() for k, v in p.items()}


@register_proxy("ghn_finetune")
class GHNFinetuneProxy(GHNProxy):
    """The GHN proxy after ``steps`` SGD steps from the predicted parameters.

    Args:
        ghn, metric, eval_batch, chunk: as :class:`~ghnas.proxies.ghn.GHNProxy`.
        steps: SGD steps (full batch on the first ``train_images`` images).
        lr, momentum: SGD settings; gradients are clipped at norm 5.
        train_images: how many of the given images form the training batch; the others
            (at least 2) are scored. Without a batch size, :func:`ghnas.proxies.score`
            draws ``train_images + scored_images`` images (264: 64 to train on, 200 scored,
            the setting measured in ``benchmarks/ghn_proxy_curve.py``) in every space; pass
            ``batch_size = train_images + images to score`` for another split.
    """

    #: images scored after the steps when no batch size is given
    scored_images = 200

    def __init__(self, ghn: Any = None, metric: str = "neg_loss", steps: int = 10, lr: float = 0.05,
                 momentum: float = 0.9, train_images: int = 64, eval_batch: int = 100, chunk: int = 16):
        super().__init__(ghn, metric=metric, eval_batch=eval_batch, chunk=chunk)
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if int(train_images) < 2:
            raise ValueError(f"train_images must be >= 2 (batch norm needs a batch), got {train_images}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.train_images = int(train_images)
        # an instance attribute, as with_batch_size sets: GHNProxy.for_space then leaves it
        # alone, so the zero-cost proxy's per-space image counts never shrink the scored set
        self.default_batch_size = self.train_images + self.scored_images

    def _evaluate(self, model: nn.Module, params: dict[str, torch.Tensor],
                  batches: Sequence[Batch], metric: str | None = None) -> float:
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        if len(y) < self.train_images + 2:
            raise ValueError(f"ghn_finetune needs more than train_images={self.train_images} images "
                             f"(the rest are scored, at least 2), got {len(y)}; raise the batch size")
        tuned = finetune_predicted(model, params, x[:self.train_images], y[:self.train_images],
                                   self.steps, self.lr, self.momentum)
        return super()._evaluate(model, tuned, [(x[self.train_images:], y[self.train_images:])], metric)
