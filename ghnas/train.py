"""Brief training and evaluation of candidate networks.

One short loop in the airbench / nanoGPT manner: the images stay in memory as uint8 (on
the training device when that is a GPU), batches are cut by indexing and augmented on the
device, and nothing else sits between the data and the model. The defaults follow the
NAS-Bench-201 / DARTS recipes: SGD with Nesterov momentum 0.9, weight decay 5e-4, a
cosine schedule to zero over the whole run, gradient clipping at norm 5.

Two uses drive the design:

- ground truth for ranking experiments (:mod:`ghnas.bench`): train each candidate for an
  epoch or so and read :attr:`TrainResult.eval_accuracy`;
- accuracy-vs-steps curves (GHN initialisation against random initialisation): pass
  ``eval_every`` and plot :meth:`TrainResult.series`. The curve starts at step 0, before
  any update, so the accuracy of the initial parameters is on it.

Example::

    >>> import torch, search_spaces
    >>> from ghnas.data import ImageData
    >>> from ghnas.train import train, evaluate
    >>> g = torch.Generator().manual_seed(0)
    >>> data = ImageData(torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g),
    ...                  torch.arange(64) % 2, ['a', 'b'])
    >>> model = search_spaces.get('nb201').build(
    ...     '|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|', C=4, N=1, num_classes=2)
    >>> res = train(model, data, steps=4, batch_size=16, eval_data=data, eval_every=2, progress=False)
    >>> [p.step for p in res.history]
    [0, 2, 4]
    >>> 0.0 <= evaluate(model, data).accuracy <= 1.0
    True
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalResult", "HistoryPoint", "TrainResult", "evaluate", "train", "BN_MODES"]

BN_MODES: tuple[str, ...] = ("eval", "batch")


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Accuracy (a fraction in [0, 1]) and mean cross-entropy over ``n`` images."""

    accuracy: float
    loss: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HistoryPoint:
    """One point of a training curve.

    ``train_loss`` is the mean training loss over the steps since the previous point
    (``None`` at step 0, before any update); ``eval_*`` are ``None`` without eval data.
    ``epoch`` counts passes over the training data (fractional inside an epoch).
    """

    step: int
    epoch: float
    lr: float
    train_loss: Optional[float]
    eval_accuracy: Optional[float] = None
    eval_loss: Optional[float] = None
    seconds: float = 0.0  # wall time since the start of training, evaluations included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` did: settings, the curve, and the final numbers."""

    steps: int
    epochs: float
    batch_size: int
    train_loss: float  # mean training loss over the last epoch (or the whole run if shorter)
    eval_accuracy: Optional[float]  # on eval_data after the last step (None without it)
    eval_loss: Optional[float]
    seconds: float  # wall time of the whole call, evaluations included
    train_seconds: float  # wall time spent in training steps only
    history: list[HistoryPoint] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # loss of every step, in order
    diverged: bool = False  # stopped early because the loss became NaN or infinite
    settings: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str = "eval_accuracy") -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one history field, skipping points where it is ``None``.

        >>> steps, acc = result.series('eval_accuracy')  # doctest: +SKIP
        >>> plt.plot(steps, acc)  # doctest: +SKIP
        """
        names = [f for f in HistoryPoint.__dataclass_fields__ if f != "step"]
        if key not in names:
            raise ValueError(f"unknown history field {key!r}; valid fields: {', '.join(names)}")
        pts = [(p.step, getattr(p, key)) for p in self.history if getattr(p, key) is not None]
        return [s for s, _ in pts], [float(v) for _, v in pts]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        from ._util import jsonable

        # NaN losses of a diverged run become null so the text stays strict JSON
        return json.dumps(jsonable(self.to_dict(), nonfinite="null"), allow_nan=False)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _model_device(model: nn.Module) -> torch.device:
    from ._util import model_device

    return model_device(model)


def _logits(out: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Split a model output into (logits, auxiliary logits or None).

    (Not :func:`ghnas._util.first_tensor`: training also needs the auxiliary logits.)

    DARTS networks with an auxiliary head return ``(logits, aux)`` while training; the
    NAS-Bench-201 reference returns ``(features, logits)``, which we do not support: our
    builders return logits only.
    """
    if isinstance(out, (tuple, list)):
        if not out:
            raise ValueError("the model returned an empty tuple; expected logits or (logits, aux)")
        aux = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], aux
    return out, None


def _autocast(device: torch.device, amp: Optional[bool]):
    use = device.type == "cuda" if amp is None else amp
    if not use:
        return contextlib.nullcontext()
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"amp=True is supported on cuda and cpu devices, not {device.type!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _check_data(data: Any, name: str) -> None:
    if not hasattr(data, "batches") or not hasattr(data, "__len__"):
        raise TypeError(f"{name} must be a ghnas.data.ImageData (or have .batches() and len()); "
                        f"got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside, each module's own flag restored on exit (``model.train(was)``
    would not do: it would also flip submodules that were in a different mode)."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def _batch_stat_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate with batch statistics in BN layers, leaving the model exactly as it was.

    Every module goes to eval mode (no dropout, no drop-path, no auxiliary head), then BN
    layers switch to training behaviour with ``track_running_stats=False``: PyTorch then
    normalises with the batch's statistics and neither reads nor updates the running
    buffers (nor ``num_batches_tracked``). Flags are restored on exit, errors included.
    """
    saved = [(m, m.training) for m in model.modules()]
    bns = [(m, m.track_running_stats) for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        model.eval()
        for m, _ in bns:
            m.training = True
            m.track_running_stats = False
        yield
    finally:
        for m, flag in bns:
            m.track_running_stats = flag
        for m, flag in saved:
            m.training = flag


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------
def evaluate(model: nn.Module, data: Any, batch_size: int = 500,
             device: torch.device | str | None = None, bn_mode: str = "eval",
             amp: Optional[bool] = None) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` on all of ``data``.

    Args:
        model: returns logits, or a tuple whose first item is the logits.
        data: a :class:`ghnas.data.ImageData` (no augmentation is applied).
        batch_size: images per forward pass.
        device: where to run (default: where the model's parameters are). The model is
            not moved; put it there first.
        bn_mode: ``'eval'`` uses the BN running statistics (the usual ``model.eval()``);
            ``'batch'`` normalises with each batch's statistics, as GHN-predicted networks
            are evaluated (their running statistics are meaningless): BN layers behave as
            in training but do not update their running buffers, and dropout, drop-path
            and auxiliary heads stay off. Results then depend on ``batch_size``.
        amp: bfloat16 autocast; ``None`` means on for CUDA, off otherwise.

    The model's train/eval flags (and BN flags) are restored afterwards.

    Example::

        >>> import torch
        >>> from ghnas.data import ImageData
        >>> d = ImageData(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 1]), ['a', 'b'])
        >>> always_b = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
        >>> with torch.no_grad():
        ...     _ = always_b[1].weight.zero_(); _ = always_b[1].bias.copy_(torch.tensor([0., 1.]))
        >>> evaluate(always_b, d).accuracy
        0.75
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; valid: {', '.join(BN_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    _check_data(data, "data")
    device = torch.device(device) if device is not None else _model_device(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    mode = _batch_stat_mode(model) if bn_mode == "batch" else _eval_mode(model)
    with mode, torch.no_grad():
        for x, y in data.batches(batch_size, shuffle=False, device=device, augment=False):
            with _autocast(device, amp):
                logits, _ = _logits(model(x))
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            n += len(y)
    return EvalResult(accuracy=correct.item() / n, loss=loss_sum.item() / n, n=n)


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------
def train(model: nn.Module, data: Any, steps: Optional[int] = None,
          epochs: Optional[float] = None, batch_size: int = 128, lr: float = 0.025,
          momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4,
          label_smoothing: float = 0.0, augment: bool = True, seed: int = 0,
          device: torch.device | str | None = None, eval_data: Any = None,
          eval_every: Optional[int] = None, eval_batch_size: int = 500,
          eval_bn_mode: str = "eval", progress: bool = True, grad_clip: Optional[float] = 5.0,
          aux_weight: float = 0.4, amp: Optional[bool] = None, warmup_steps: int = 0) -> TrainResult:
    """Train ``model`` in place for ``steps`` updates or ``epochs`` passes over ``data``.

    Args:
        model: an ``nn.Module`` returning logits, or ``(logits, aux_logits)`` (DARTS'
            auxiliary head; its loss is added with weight ``aux_weight``).
        data: training images, a :class:`ghnas.data.ImageData`. Each epoch visits them in
            a new order (seeded by ``seed`` and the epoch number); when there are at
            least ``batch_size`` images the last, smaller batch is dropped.
        steps, epochs: the length of the run; give exactly one. ``epochs`` may be a
            fraction (the run is then ``round(epochs * batches_per_epoch)`` steps).
        batch_size, lr, momentum, nesterov, weight_decay: SGD settings; weight decay
            applies to every parameter, as in the NAS-Bench-201 and DARTS recipes. The
            learning rate follows a cosine from ``lr`` at step 0 to 0 after the last step.
        label_smoothing: passed to the cross-entropy.
        augment: random crop (4-pixel padding) and horizontal flip of training batches.
        seed: fixes the data order, the augmentation and any randomness inside the model
            (dropout, drop-path). The global RNG state is left as it was. On the CPU the
            same seed and the same initial model give bit-identical results.
        device: where to train (default: where the model is). The model is moved there,
            and so are the images (once, as uint8) when it is a GPU.
        eval_data: evaluated at every history point, e.g. a validation subset.
        eval_every: add a history point every this many steps, plus one at step 0 (before
            any update) and one at the last step. Without it, there is a point at the end
            of every whole epoch and at the last step.
        eval_batch_size, eval_bn_mode: passed to :func:`evaluate`.
        progress: show a tqdm progress bar.
        grad_clip: clip the global gradient norm to this value (``None`` or 0: no clip).
        amp: bfloat16 autocast; ``None`` means on for CUDA, off otherwise.
        warmup_steps: the learning rate rises linearly from ``lr / warmup_steps`` to ``lr``
            over this many first steps (then the cosine, over the whole run, takes over):
            gentler first updates for a network that starts from good parameters, such as
            a GHN warm start.

    Returns:
        A :class:`TrainResult`. The model is trained in place and left in training mode.
        A run whose mean loss at a history point is NaN or infinite stops there with
        ``diverged=True``.
    """
    _check_train_args(data, steps, epochs, batch_size, eval_every, eval_bn_mode, eval_data)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    t_start = time.perf_counter()
    device = torch.device(device) if device is not None else _model_device(model)
    data, eval_data = _place(model, data, eval_data, device)
    drop_last = len(data) >= batch_size
    per_epoch = len(data) // batch_size if drop_last else 1
    total = steps if steps is not None else max(1, round(epochs * per_epoch))
    opt, sched = _sgd(model, lr, momentum, nesterov, weight_decay, total, warmup_steps)
    marks = _history_marks(total, per_epoch, eval_every)
    rec = _Recorder(model, eval_data, device, total, per_epoch, sched, t_start,
                    dict(batch_size=eval_batch_size, device=device, bn_mode=eval_bn_mode, amp=amp))
    loss_fn = functools.partial(_loss, label_smoothing=label_smoothing, aux_weight=aux_weight)
    params = [p for p in model.parameters() if p.requires_grad]
    bar = _bar(progress, total)
    step = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model.train()
        if 0 in marks:
            rec.add_point(0)
        epoch = 0
        t_train = time.perf_counter()
        while step < total and not rec.diverged:
            batches = data.batches(batch_size, shuffle=True, seed=seed * 100_003 + epoch,
                                   device=device, augment=augment, drop_last=drop_last)
            for x, y in batches:
                rec.losses[step] = _sgd_step(model, opt, sched, params, x, y, loss_fn, device, amp, grad_clip)
                step += 1
                if bar is not None:
                    bar.update(1)
                if step in marks:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    rec.train_seconds += time.perf_counter() - t_train
                    ok = rec.add_point(step)
                    model.train()
                    _show(bar, rec.history[-1])
                    if not ok:
                        rec.diverged = True
                        break
                    t_train = time.perf_counter()
                if step >= total:
                    break
            epoch += 1
    if bar is not None:
        bar.close()
    settings = dict(batch_size=batch_size, lr=lr, momentum=momentum, nesterov=nesterov,
                    weight_decay=weight_decay, label_smoothing=label_smoothing,
                    augment=augment, seed=seed, grad_clip=grad_clip, aux_weight=aux_weight,
                    device=str(device), amp=device.type == "cuda" if amp is None else amp,
                    warmup_steps=warmup_steps)
    return rec.result(step, batch_size, settings)


# --------------------------------------------------------------------------- train() stages
def _check_train_args(data, steps, epochs, batch_size, eval_every, eval_bn_mode, eval_data) -> None:
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps or epochs; got steps={steps!r}, epochs={epochs!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if epochs is not None and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ValueError(f"epochs must be a positive number; got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive integer or None; got {eval_every!r}")
    if eval_bn_mode not in BN_MODES:
        raise ValueError(f"unknown eval_bn_mode {eval_bn_mode!r}; valid: {', '.join(BN_MODES)}")
    _check_data(data, "data")
    if eval_data is not None:
        _check_data(eval_data, "eval_data")


def _place(model: nn.Module, data: Any, eval_data: Any, device: torch.device):
    """Move the model to ``device``; on a GPU the images too (airbench style: the whole
    uint8 set lives on the GPU, batches are cut there)."""
    model.to(device)
    if device.type != "cpu":
        if hasattr(data, "to") and getattr(data, "device", device) != device:
            data = data.to(device)
        if eval_data is not None and hasattr(eval_data, "to") and getattr(eval_data, "device", device) != device:
            eval_data = eval_data.to(device)
    return data, eval_data


def _sgd(model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float, total: int,
         warmup: int = 0):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)

    def factor(t: int) -> float:
        # per-step cosine from lr to 0: lr_t = lr * (1 + cos(pi * t / total)) / 2, times a
        # linear ramp (t + 1) / warmup over the first warmup steps
        cos = 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
        return cos * min(1.0, (t + 1) / warmup) if warmup else cos

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _history_marks(total: int, per_epoch: int, eval_every: Optional[int]) -> set[int]:
    """Steps with a history point: every ``eval_every`` (and 0), else each whole epoch; always the last."""
    marks = set(range(0, total + 1, eval_every)) if eval_every else \
        {e * per_epoch for e in range(1, total // per_epoch + 1)}
    marks.add(total)
    return marks


def _loss(logits: torch.Tensor, aux: Optional[torch.Tensor], y: torch.Tensor, label_smoothing: float,
          aux_weight: float) -> torch.Tensor:
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    if aux is not None and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(aux.float(), y, label_smoothing=label_smoothing)
    return loss


def _sgd_step(model, opt, sched, params, x, y, loss_fn, device, amp, grad_clip) -> torch.Tensor:
    with _autocast(device, amp):
        logits, aux = _logits(model(x))
    loss = loss_fn(logits, aux, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    return loss.detach()


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", leave=False)


def _show(bar, point: "HistoryPoint") -> None:
    if bar is not None and point.train_loss is not None:
        post = {"loss": f"{point.train_loss:.3f}"}
        if point.eval_accuracy is not None:
            post["acc"] = f"{point.eval_accuracy:.3f}"
        bar.set_postfix(post)


class _Recorder:
    """Step losses and history points of one :func:`train` run."""

    def __init__(self, model, eval_data, device, total: int, per_epoch: int, sched, t_start: float,
                 eval_kwargs: dict[str, Any]):
        self.model, self.eval_data, self.sched = model, eval_data, sched
        self.per_epoch, self.t_start, self.eval_kwargs = per_epoch, t_start, eval_kwargs
        self.losses = torch.zeros(total, dtype=torch.float32, device=device)
        self.history: list[HistoryPoint] = []
        self.last_mark = 0
        self.train_seconds = 0.0
        self.diverged = False

    def add_point(self, step: int) -> bool:
        """Record a history point; returns False when the loss has diverged."""
        seg = self.losses[self.last_mark:step]
        mean = seg.mean().item() if step > self.last_mark else None
        point = HistoryPoint(step=step, epoch=step / self.per_epoch, lr=self.sched.get_last_lr()[0],
                             train_loss=mean)
        if self.eval_data is not None:
            ev = evaluate(self.model, self.eval_data, **self.eval_kwargs)
            point.eval_accuracy, point.eval_loss = ev.accuracy, ev.loss
        point.seconds = time.perf_counter() - self.t_start
        self.history.append(point)
        self.last_mark = step
        return mean is None or math.isfinite(mean)

    def result(self, step: int, batch_size: int, settings: dict[str, Any]) -> "TrainResult":
        done = self.losses[:step].tolist()
        window = done[-min(self.per_epoch, len(done)):]
        last = self.history[-1]
        return TrainResult(
            steps=step, epochs=step / self.per_epoch, batch_size=batch_size,
            train_loss=float(sum(window) / len(window)),
            eval_accuracy=last.eval_accuracy, eval_loss=last.eval_loss,
            seconds=time.perf_counter() - self.t_start, train_seconds=self.train_seconds,
            history=self.history, step_losses=done, diverged=self.diverged, settings=settings)
