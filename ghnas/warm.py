"""Warm starts: initialise a network with GHN-predicted parameters, then fine-tune it.

A GHN predicts every parameter of a network in one forward pass. Those parameters are a
better starting point than a random initialisation (Knyazev et al. 2021, section 5.2),
but the network that ``ghn(model)`` returns is set up for *evaluation without training*:
ppuda switches every batch-norm layer to batch statistics (``track_running_stats=False``).
:func:`warm_start` writes the prediction into the model and leaves it in the ordinary
trainable state instead: batch norm tracks running statistics again, every parameter
requires grad, and the model is in training mode.

Example::

    >>> import torch, search_spaces, ghnas
    >>> ghn = ghnas.GHN2(hid=16, max_shape=(16, 16, 3, 3))            # a trained GHN in practice
    >>> model = search_spaces.get('nb201').build(
    ...     '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|none~1|nor_conv_3x3~2|',
    ...     C=4, N=1)
    >>> model = ghnas.warm_start(model, ghn)
    >>> model.training, all(p.requires_grad for p in model.parameters())
    (True, True)
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["warm_start", "resolve_ghn_arg", "reset_batchnorm", "calibrate_batchnorm", "match_init_norms",
           "decorrelate_weights"]


def resolve_ghn_arg(ghn: Any, device: str | torch.device = "cpu"):
    """A GHN from a registered name, a checkpoint path, a :class:`~ghnas.ghn.GHNRef`, or a
    ``GHN2`` instance (returned as is); ``ValueError`` if its weights are not all finite."""
    from .ghn.hub import check_ghn_weights
    from .ghn.ref import GHNRef

    ref = GHNRef.of(ghn)
    if ref.instance is not None:
        return check_ghn_weights(ref.instance)  # a GHN with NaN weights predicts NaN networks
    return ref.load(device)


def reset_batchnorm(model: nn.Module) -> int:
    """Put every batch-norm layer back into the normal trainable state; return how many.

    Undoes what ``ghn(model)`` (ppuda's convention) does to batch norm: tracking of
    running statistics is switched back on (creating the buffers if the layer was built
    without them) and the statistics are reset to mean 0, variance 1. Predicted networks
    carry no meaningful running statistics, so keeping stale ones would be wrong.
    """
    n = 0
    for m in model.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if getattr(m, "running_mean", None) is None:
            ref = m.weight if m.weight is not None else next(model.parameters(), torch.zeros(()))
            kw = dict(device=ref.device, dtype=ref.dtype)
            m.register_buffer("running_mean", torch.zeros(m.num_features, **kw))
            m.register_buffer("running_var", torch.ones(m.num_features, **kw))
            m.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=ref.device))
        m.track_running_stats = True
        m.reset_running_stats()
        n += 1
    return n


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, data: Any, batches: int = 4, batch_size: int = 128,
                        seed: int = 0) -> None:
    """Estimate batch-norm running statistics as an exact average over a few batches.

    ``data`` is an :class:`ghnas.data.ImageData` (``batches`` shuffled batches of
    ``batch_size`` images, seeded by ``seed``) or an iterable of ``(x, y)`` batches.
    Parameters, train/eval flags and momentum are left as they were.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved_mode = [(m, m.training) for m in model.modules()]
    saved_momentum = [(m, m.momentum) for m in bns]
    try:
        model.eval()  # no dropout / drop-path / auxiliary head while measuring
        for m in bns:
            m.train()
            m.momentum = None  # cumulative moving average: every batch counts equally
        if hasattr(data, "batches"):
            it = data.batches(batch_size, shuffle=True, seed=seed, device=device)
        else:
            it = iter(data)
        for i, batch in enumerate(it):
            if i >= batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
    finally:
        for m, mom in saved_momentum:
            m.momentum = mom
        for m, flag in saved_mode:
            m.training = flag


@torch.no_grad()
def match_init_norms(model: nn.Module, init_norms: dict[str, float], *,
                     input_shape: Sequence[int] = (1, 3, 32, 32), rtol: float = 1e-3, seed: int = 0) -> list[str]:
    """Rescale weights to the norm they had at initialisation wherever that leaves the
    network's function unchanged; return the names of the rescaled weights.

    Why: a weight followed by batch norm (through convolutions, ReLUs and pooling) can be
    multiplied by any positive factor without changing the network, but its gradient, and
    so its effective learning rate, shrinks with the square of its norm. GHN predictions
    are several times larger than PyTorch's initialisation (median 3.0-3.9x, up to 12x, for
    DARTS networks at C=16 with 8 cells: ``benchmarks/probe_weight_norms.py``), which slows
    SGD on them about 10-150x. Rescaling the
    predicted weights to their initial norms keeps what the GHN predicted and gives SGD its
    usual step size back.

    A weight (every parameter of two or more dimensions named in ``init_norms``) is
    rescaled only if the logits on a fixed random batch (batch norm on batch statistics)
    move by at most ``rtol`` of their norm; otherwise (a classifier, a convolution feeding
    a residual sum without batch norm) it is left as it is. Weights are tested in groups,
    halved where the output moves, so this costs a few dozen forward passes of a batch of
    two ``input_shape`` images, in :func:`ghnas.train._batch_stat_mode` (buffers untouched,
    train/eval flags restored).
    """
    from .train import _batch_stat_mode, _logits

    params = dict(model.named_parameters())
    todo = [n for n, v in init_norms.items()
            if n in params and params[n].dim() >= 2 and v > 0 and float(params[n].norm()) > 0]
    if not todo:
        return []
    ref = params[todo[0]]
    shape = (max(2, int(input_shape[0])), *[int(d) for d in input_shape[1:]])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=ref.device, dtype=ref.dtype)
    done: list[str] = []
    with _batch_stat_mode(model):  # no dropout / drop-path; running statistics left alone
        y0 = _logits(model(x))[0]
        tol = rtol * float(y0.norm()) + 1e-12
        factor = {n: init_norms[n] / float(params[n].norm()) for n in todo}

        def rescale(names: list[str]) -> None:
            # group testing: rescale a whole group and keep it if the output stays put, else
            # split it; the few weights that matter to the output cost O(log n) passes each
            olds = [params[n].detach().clone() for n in names]
            for n in names:
                params[n].mul_(factor[n])
            if float((_logits(model(x))[0] - y0).norm()) <= tol:
                done.extend(names)
                return
            for n, old in zip(names, olds):
                params[n].copy_(old)
            if len(names) > 1:
                rescale(names[:len(names) // 2])
                rescale(names[len(names) // 2:])

        rescale(todo)
    return done


def _as_tall(w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``w`` as a matrix of one row per output unit, transposed if that is wider than tall."""
    m = w.reshape(w.shape[0], -1)
    return (m.t(), True) if m.shape[0] < m.shape[1] else (m, False)


def _orthogonal_like(w: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor of ``w``'s QR decomposition, in ``w``'s shape: the first
    filter's direction is kept, every later one made orthogonal to those before it."""
    m, transposed = _as_tall(w.double())
    q, r = torch.linalg.qr(m)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return (q.t() if transposed else q).reshape(w.shape).to(w.dtype)


def _filter_correlation_std(w: torch.Tensor) -> float:
    """Spread of the correlations between ``w``'s output filters (0 when undefined)."""
    m = w.reshape(w.shape[0], -1).double()
    if m.shape[0] < 2 or m.shape[1] < 2:
        return 0.0
    c = torch.corrcoef(m)
    c = c[torch.isfinite(c)]  # a constant filter has no correlation
    return float(c.std()) if c.numel() > 1 else 0.0


@torch.no_grad()
def decorrelate_weights(model: nn.Module, *, orthogonalize: bool = True, noise: float = 0.0,
                        seed: int = 0) -> list[str]:
    """Make predicted filters less alike before fine-tuning (Knyazev 2022, "Pretraining a
    Neural Network before Knowing Its Architecture"); return the names of the changed weights.

    Why: a GHN tends to predict filters that are much alike, and gradient descent from
    near-duplicate filters keeps them alike. For every module weight of two or more
    dimensions except the last one (the classifier, whose prediction is kept):

    - ``noise`` > 0 adds Gaussian noise with standard deviation ``noise`` times the spread
      of the correlations between the weight's filters, and the same amount to the weight
      and bias of each following one-dimensional (normalisation) layer;
    - ``orthogonalize`` replaces the weight by the orthonormal factor of its QR
      decomposition (output filters as rows; the matrix transposed where it is wider than
      tall), signs fixed so that the factor is unique.

    Orthogonal weights have unit-norm filters (or inputs), which also brings the large
    predicted norms near PyTorch's initial scale; where batch norm follows, only the
    weight's direction matters to the network.
    """
    g = torch.Generator().manual_seed(seed)
    named = [(n, m) for n, m in model.named_modules()
             if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() > 0]
    last_2d = max((i for i, (_, m) in enumerate(named) if m.weight.dim() >= 2), default=-1)
    changed: list[str] = []
    spread = 0.0
    for i, (name, m) in enumerate(named):
        w = m.weight
        prefix = name + "." if name else ""
        if w.dim() >= 2:
            if i == last_2d:
                continue
            spread = _filter_correlation_std(w)
            if noise > 0 and spread > 0:
                w.add_(noise * spread * torch.randn(w.shape, generator=g).to(w))
            if orthogonalize:
                w.copy_(_orthogonal_like(w))
            if orthogonalize or (noise > 0 and spread > 0):
                changed.append(prefix + "weight")
        elif noise > 0 and spread > 0 and i < last_2d:
            for pname in ("weight", "bias"):
                t = getattr(m, pname, None)
                if isinstance(t, torch.Tensor):
                    t.add_(noise * spread * torch.randn(t.shape, generator=g).to(t))
                    changed.append(prefix + pname)
    return changed


def warm_start(model: nn.Module, ghn: Any, *, data: Any = None, calib_batches: int = 4,
               batch_size: int = 128, seed: int = 0, match_norms: bool = False,
               orthogonalize: bool = False, noise: float = 0.0,
               input_shape: Sequence[int] | None = None) -> nn.Module:
    """Initialise ``model`` with GHN-predicted parameters, ready to fine-tune (in place).

    Args:
        model: any network the GHN can read (a ``search_spaces`` build, a torchvision
            model, ...). Its classifier must have as many outputs as the GHN predicts
            (``ghn.num_classes``).
        ghn: a GHN name (see :func:`ghnas.ghn.available_ghns`), a checkpoint path, a
            ``GHN2`` instance or a :class:`~ghnas.ghn.GHNRef`; a name or path is loaded
            once per process, so many warm starts (trials of a study) share it.
        data: optional training images (a :class:`ghnas.data.ImageData` or an iterable of
            ``(x, y)`` batches). When given, batch-norm running statistics are estimated
            on ``calib_batches`` batches of ``batch_size`` images, so the model is also
            usable in ``eval()`` mode right away. Without it they are reset to mean 0,
            variance 1 and fill up during fine-tuning.
        calib_batches, batch_size, seed: how the calibration batches are drawn.
        match_norms: rescale every predicted weight whose scale the network's output does
            not depend on (one followed by batch norm) to the norm the model's own
            initialisation gave it (:func:`match_init_norms`): the function is the GHN's,
            the effective learning rate that of a fresh network. Off by default: with the
            shipped GHNs it lifted DARTS networks after one epoch of SGD but lost most of
            the NB201 start's lead in the first 50 steps (README, "Warm start").
        orthogonalize, noise: Knyazev (2022)'s post-processing of the prediction before
            fine-tuning (:func:`decorrelate_weights`): every weight but the classifier's
            replaced by its orthonormal QR factor, and/or noise scaled by the spread of its
            filters' correlations (``noise`` is that scale; 0: none). Applied before
            ``match_norms``. Off by default (README, "Warm start", for what they measured).
        input_shape: input shape for graph extraction (default ``(1, 3, 32, 32)``).

    Raises:
        ValueError: the GHN's weights or its prediction hold NaN or inf (the model is
            then left untouched), or calibration gave non-finite batch-norm statistics.

    Returns:
        ``model`` itself: every parameter the forward pass uses holds the GHN's
        prediction; parameters that the forward pass never touches (ops made dead by
        ``none`` edges of a NAS-Bench-201 cell, for example) get no prediction and keep
        their initial values, which cannot change the output. All parameters require
        grad, batch norm tracks running statistics, and the model is in training mode.

    Example::

        >>> import torchvision, ghnas
        >>> net = ghnas.warm_start(torchvision.models.resnet18(num_classes=10),
        ...                        'runs/meta/ghn.pt')                 # doctest: +SKIP
    """
    from .graph import extract

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if not noise >= 0:  # NaN too
        raise ValueError(f"noise must be a number >= 0, got {noise}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    net = resolve_ghn_arg(ghn, device)
    was_training = net.training
    net = net.to(device).eval()
    with warnings.catch_warnings():
        # unused parameters are reported by extract(); here they are expected (dead ops)
        warnings.simplefilter("ignore", UserWarning)
        graph = extract(model) if input_shape is None else extract(model, input_shape)
        with torch.no_grad():
            pred = net.predict([graph])[0]
    net.train(was_training)
    from .ghn.hub import check_finite

    # before the model is touched: a finite GHN can still predict inf (overflow) or NaN
    check_finite(pred, f"the GHN's prediction for this {type(model).__name__}")
    params = dict(model.named_parameters())
    init_norms = {k: float(p.detach().norm()) for k, p in params.items() if k in pred} if match_norms else {}
    unknown = [k for k in pred if k not in params]
    if unknown:
        raise ValueError(f"the GHN predicted parameters the model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, value in pred.items():
            p = params[name]
            if tuple(p.shape) != tuple(value.shape):
                raise ValueError(f"GHN prediction for {name!r} has shape {tuple(value.shape)}, "
                                 f"the model's parameter has {tuple(p.shape)}")
            p.copy_(value.to(dtype=p.dtype, device=p.device))
    for p in model.parameters():
        p.requires_grad_(True)
    reset_batchnorm(model)
    if orthogonalize or noise > 0:
        decorrelate_weights(model, orthogonalize=orthogonalize, noise=noise, seed=seed)
    if match_norms:
        match_init_norms(model, init_norms, input_shape=input_shape or (1, 3, 32, 32), seed=seed)
    if data is not None and calib_batches > 0:
        calibrate_batchnorm(model, data, calib_batches, batch_size, seed)
        # predicted weights can be finite yet blow up activations into inf statistics
        check_finite(dict(model.named_buffers()), f"warm_start: the batch-norm statistics of this "
                                                  f"{type(model).__name__} after calibration")
    model.train()
    return model
