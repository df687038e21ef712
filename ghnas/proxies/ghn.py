"""The GHN proxy: score an architecture by how well its GHN-predicted parameters work.

A GHN predicts all parameters of many candidate networks in one batched call; each
predicted network is then evaluated on a few held-out batches, with batch norm on batch
statistics (predicted networks have no running statistics). No training happens.

Example::

    >>> from ghnas.proxies import score
    >>> table = score(archs, space='nb201', proxy=GHNProxy(ghn='ghnas-nb201-cifar10'),
    ...               data='sample')                                 # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..ghn.ref import GHNRef, on_device, state_digest
from .base import Batch, Proxy, ResultCallback, arch_seed, register_proxy, space_name

METRICS = ("acc", "neg_loss", "acc_loss", "prob", "neg_clipped_loss", "neg_prob")
#: the metric of a space's GHN proxy when none is given, chosen with the space's ranking GHN
#: on the tuning half of its dev set (benchmarks/results/ranking_ghn/<space>_tune.md,
#: benchmarks/results/ranking_ghn_size/darts_tune.md); other spaces use DEFAULT_METRIC. On
#: NB301's tuning half the DARTS GHN's predicted networks are *more* confident on the worse
#: architectures: minus the mean true-label probability ranks at Kendall tau 0.37 (C=16 with
#: 8 cells, 500 images, six image seeds), minus the loss at 0.16 at best.
SPACE_METRICS = {"darts": "neg_prob"}
DEFAULT_METRIC = "neg_loss"
#: images of a space's GHN proxy made by name for that space (``get_proxy('ghn', space=...)``,
#: ``score(..., proxy='ghn')``, searches), chosen with the metric and size; otherwise
#: default_batch_size. (The DARTS ``zero-shot`` default keeps the 200 it was chosen with.)
SPACE_IMAGES = {"darts": 500}
#: network size of a space's GHN proxy alone (not in an aggregate) with the space's shipped
#: ranking GHN, chosen with the metric (``ghnas.searching.ranking_size``; an explicit
#: ``build_kwargs`` wins). On NB301's tuning half (six image seeds) minus the true-label
#: probability ranks at 0.368 at C=16 with 8 cells on 500 images, at 0.306 at the proxy size
#: (C=8 with 5 cells) on 200 (benchmarks/results/ranking_ghn_size/darts_tune.md).
SPACE_SIZES = {"darts": {"C": 16, "layers": 8}}


@register_proxy("ghn")
class GHNProxy(Proxy):
    """Accuracy (or loss) of GHN-predicted parameters on held-out images.

    Args:
        ghn: a GHN name (``load_ghn`` resolves it), a checkpoint path, or a ``GHN2``
            instance; ``None`` uses the GHN shipped for ranking the space being searched
            (``'ghnas-<space>-cifar10-rank'``, chosen on the tuning half of the space's dev
            set for how it ranks), else its predicting GHN (``'ghnas-<space>-cifar10'``).
        metric: ``'neg_loss'`` (minus the cross-entropy), ``'acc'``
            (accuracy) or ``'acc_loss'`` (accuracy, with the loss breaking ties between
            equally accurate networks), ``'prob'`` (mean softmax probability of the true
            label), ``'neg_clipped_loss'`` (minus the cross-entropy with each image's
            loss capped at chance, ``ln`` of the number of classes), or ``'neg_prob'``
            (minus ``'prob'``: higher for less confident predicted networks); ``prob`` and
            the clipped loss are bounded, so a few confidently wrong images cannot dominate
            the score (see :class:`~ghnas.ghn.evaluate.PredictedEval`). ``None`` (the
            default): the metric chosen for the space being scored (:data:`SPACE_METRICS`:
            ``'neg_prob'`` on DARTS, ``'neg_loss'`` elsewhere and for a bare model). The
            loss is the NB201 default because accuracy on a
            few hundred images moves in coarse steps and carries binomial noise of a few
            points, larger than the differences between predicted networks. On the tuning
            half of the NAS-Bench-201 dev set, with the multi-size GHN at steps 6,500 to
            7,000, the loss on 1,000 images ranked at Kendall tau 0.69 against 0.41-0.52
            for the accuracy, and it changed by 0.005 between snapshots 250 steps apart.
        eval_batch: images per forward pass; batch norm normalises over this many.
            A network whose loss is NaN or infinite scores NaN under every metric.
        chunk: architectures predicted per GHN call (bounds memory).

    The networks are built at the size the caller passes (``build_kwargs``). Where ghnas
    chooses it (``ghnas.search``, ``ghnas score``, ``ghnas correlate``, the Optuna and Ray
    Tune scorers), this proxy alone with the space's shipped ranking GHN scores at the size
    it was chosen to rank at (:data:`SPACE_SIZES`: DARTS at C=16 with 8 cells), and in an
    aggregate at the aggregate's one size.
    """

    higher_is_better = True
    needs_data = True
    # ten batch-norm batches of 100 images, with the space's ranking GHN. Chosen with that GHN
    # on the tuning half of the NB201 dev set over six image seeds
    # (benchmarks/results/ranking_ghn/nb201_tune.md): the loss on 1,000 images ranked at
    # Kendall tau 0.678 (std over seeds 0.030) against 0.643 on 500 and 0.605 on 200. An
    # earlier choice of 200 images, made on three seeds, did not hold on new image seeds.
    default_batch_size = 1000
    needs_ghn = True

    def __init__(self, ghn: Any = None, metric: str | None = None, eval_batch: int = 100,
                 chunk: int = 16):
        if metric is not None and metric not in METRICS:
            raise ValueError(f"unknown GHN proxy metric {metric!r}; valid: {', '.join(METRICS)}")
        if eval_batch < 2:
            raise ValueError(f"eval_batch must be >= 2 (batch norm needs a batch), got {eval_batch}")
        #: the metric given (None: the scored space's, see :meth:`metric_for`)
        self.metric = metric
        self.eval_batch = int(eval_batch)
        self.chunk = max(1, int(chunk))
        self._ghn = None
        self._ref: GHNRef | None = None
        #: how settings name the GHN (its name or path; None: the space's shipped GHN)
        self.ghn: str | None = None
        if ghn is not None:
            self.use_ghn(ghn)

    def use_ghn(self, ghn: Any) -> None:
        """Predict with this GHN (a name, path, ``GHN2`` or :class:`~ghnas.ghn.GHNRef`)."""
        self._ref = GHNRef.of(ghn)
        if self._ref.instance is not None:
            from ghnas.ghn.hub import check_ghn_weights

            check_ghn_weights(self._ref.instance, "GHNProxy: the GHN")  # NaN weights: every score NaN
        self._ghn = self._ref.instance
        self.ghn = self._ref.label  # an in-memory GHN is named by a digest of its weights

    @property
    def ghn_ref(self) -> GHNRef | None:
        """The GHN this proxy predicts with (``None`` until resolved for a space)."""
        return self._ref

    def for_space(self, space: Any) -> "GHNProxy":
        """This proxy with the image count chosen for ``space`` (:data:`SPACE_IMAGES`), unless
        a batch size was set (:meth:`with_batch_size`); how a proxy made by name for a space
        gets it."""
        name = space_name(space)
        if "default_batch_size" in vars(self) or name not in SPACE_IMAGES:
            return self
        return self.with_batch_size(SPACE_IMAGES[name])

    def metric_for(self, space: Any) -> str:
        """The metric this proxy scores ``space`` (a name, object or ``None``) with."""
        if self.metric is not None:
            return self.metric
        return SPACE_METRICS.get(space_name(space), DEFAULT_METRIC)

    def _resolve(self, space: Any, device: torch.device):
        device = torch.device(device)
        if self._ref is None:
            self.use_ghn(GHNRef.default(getattr(space, "name", ""), "rank"))
        if self._ghn is None:
            self._ghn = self._ref.load(device)
        elif self._ref.saved and not on_device(self._ghn, device):
            # a loaded checkpoint is shared by the process (GHNRef.load): move a copy, never
            # the shared one (the copy also serves a Ray worker that lacks the file)
            self._ghn = copy.deepcopy(self._ghn).to(device)
        return self._ghn.to(device).eval()

    def identity(self, space: Any) -> dict[str, Any]:
        """Settings with the GHN named by its weights, not by its name or path: the same
        weights share cached scores, other weights (a retrained file) never do."""
        ghn = self._resolve(space, torch.device("cpu")) if self._ghn is None else self._ghn
        return {**self.settings(), "metric": self.metric_for(space), "ghn": "weights:" + state_digest(ghn)}

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        """Predict ``model``'s parameters and evaluate them (the model is not modified)."""
        if not batches:
            raise ValueError("the GHN proxy needs data: pass data='sample', an ImageData or (x, y) batches")
        device = batches[0][0].device
        if self._ref is None:
            raise ValueError("GHNProxy.score on a bare model needs ghn= (a name, path or GHN2)")
        ghn = self._resolve(None, device)
        with torch.no_grad():
            params = ghn.predict([model])[0]
        return self._evaluate(model, params, batches, self.metric_for(None))

    def score_archs(self, archs: Sequence[str], space: Any, batches: Sequence[Batch] | None,
                    build_kwargs: dict[str, Any] | None = None, *, seed: int = 0,
                    device: str | torch.device = "cpu",
                    callback: ResultCallback | None = None) -> list[float]:
        """Predict parameters for ``chunk`` architectures per GHN call, then evaluate each."""
        if not batches:
            raise ValueError("the GHN proxy needs data: pass data='sample', an ImageData or (x, y) batches")
        device = torch.device(device)
        ghn = self._resolve(space, device)
        with warnings.catch_warnings():
            # dead ops of a cell (e.g. behind NB201 `none` edges) never reach the output:
            # they get no graph node and no prediction, and cannot change the score
            warnings.filterwarnings("ignore", message=".*not used by the forward pass.*")
            return self._score_chunks(ghn, archs, space, batches, build_kwargs, seed, device, callback)

    def _score_chunks(self, ghn, archs, space, batches, build_kwargs, seed, device, callback) -> list[float]:
        metric = self.metric_for(space)
        from ghnas.graph import extract

        kwargs = dict(build_kwargs or {})
        out: list[float] = []
        for start in range(0, len(archs), self.chunk):
            t0 = time.perf_counter()
            part = archs[start:start + self.chunk]
            models = []
            for a in part:
                # parameters are overwritten, but buffers and unused tensors come from init
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(arch_seed(seed, space.hash(a)))
                    models.append(space.build(a, **kwargs).to(device))
            with torch.no_grad():
                preds = ghn.predict([extract(m) for m in models])
            values = [self._evaluate(m, p, batches, metric) for m, p in zip(models, preds)]
            per_arch = (time.perf_counter() - t0) / len(part)
            for i, v in enumerate(values):
                out.append(v)
                if callback is not None:
                    callback(start + i, v, per_arch)
        return out

    def _evaluate(self, model: nn.Module, params: dict[str, torch.Tensor],
                  batches: Sequence[Batch], metric: str | None = None) -> float:
        from ghnas.ghn.evaluate import evaluate_predicted

        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        res = evaluate_predicted(model, params, x, y, self.eval_batch)
        acc, loss, n = res.acc, res.loss, res.n
        if not math.isfinite(loss):
            # NaN/inf logits (a degenerate network or GHN): argmax of NaN would still give a
            # finite, meaningless accuracy, so every metric reports NaN (scored as the worst)
            return float("nan")
        metric = metric or self.metric_for(None)
        if metric == "acc":
            return acc
        if metric == "neg_loss":
            return -loss
        if metric == "prob":
            return res.prob
        if metric == "neg_prob":
            return -res.prob
        if metric == "neg_clipped_loss":
            return -res.clipped_loss
        # the loss only orders networks of equal accuracy: its weight is below one image
        return acc - min(loss, 1e3) / (1e3 * n + 1)


@register_proxy("ghn_acc")
class GHNAccuracyProxy(GHNProxy):
    """The GHN proxy scored by the accuracy of the predicted networks (GHN-2's own
    measure of predicted parameters) instead of their loss; same arguments otherwise."""

    def __init__(self, ghn: Any = None, eval_batch: int = 100, chunk: int = 16):
        super().__init__(ghn, metric="acc", eval_batch=eval_batch, chunk=chunk)
