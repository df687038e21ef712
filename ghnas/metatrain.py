"""Meta-training a GHN on the architectures of a search space.

Each step samples a meta-batch of architectures (from the space, or from the ``train``
split of an HDF5 architecture dataset), predicts all their parameters with the GHN,
runs every predicted network on one image batch and updates the GHN on the mean
cross-entropy. Predicted tensors stay in the autograd graph through
``torch.func.functional_call``; nothing is written into a module's ``.data``.

The recipe follows GHN-2 (meta-batch 8, Adam lr 1e-3, weight decay 1e-5, learning-rate
drops late in training, gradient clipping at 5, image batch 64). All randomness of a
step is drawn from generators seeded by ``(seed, step)``, so a run resumed from a
checkpoint continues exactly as if it had never stopped.

Example:
    >>> from ghnas.metatrain import MetaTrainConfig, meta_train
    >>> cfg = MetaTrainConfig(space="nb201", data="sample", steps=2, meta_batch=2,
    ...                       batch_size=16, hid=8, build_kwargs={"C": 4, "N": 1},
    ...                       eval_every=0, eval_archs=2)
    >>> result = meta_train("runs/demo", cfg, progress=False)  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ghnas._io import atomic_savefig, atomic_torch_save, atomic_write_text
from ghnas._util import parse_size
from ghnas.errors import InputError

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
GHN_FILE = "ghn.pt"
BEST_FILE = "ghn_best.pt"
HISTORY_FILE = "history.json"
CURVE_FILE = "curve.png"

# settings that may differ when a run is resumed: they change neither the model nor
# the sequence of training steps already taken
_RESUMABLE_CHANGES = {"steps", "eval_every", "ckpt_every", "keep_every", "device", "workers"}


#: Multi-size meta-training per space: ``(build kwargs, weight)``. They span the proxy sizes
#: (NB201 C=8 N=1, DARTS C=8 with 5 cells) and the sizes users train (NB201's benchmark
#: network C=16 N=5; DARTS C=16 with 8 cells, NAS-Bench-301's C=32 with 8 cells, the DARTS
#: evaluation network C=36 with 20 cells), weighted towards small networks, which cost less
#: and whose graphs are the building blocks of the large ones.
DEFAULT_SIZES: dict[str, list[tuple[dict[str, int], float]]] = {
    "nb201": [({"C": 8, "N": 1}, 4), ({"C": 8, "N": 2}, 2), ({"C": 8, "N": 3}, 1.5), ({"C": 8, "N": 4}, 1),
              ({"C": 8, "N": 5}, 1), ({"C": 16, "N": 1}, 2), ({"C": 16, "N": 2}, 1), ({"C": 16, "N": 3}, 1),
              ({"C": 16, "N": 4}, 0.75), ({"C": 16, "N": 5}, 1.5)],
    "darts": [({"C": 8, "layers": 5}, 4), ({"C": 8, "layers": 8}, 2), ({"C": 16, "layers": 5}, 2),
              ({"C": 16, "layers": 8}, 2), ({"C": 16, "layers": 14}, 0.75), ({"C": 24, "layers": 8}, 1),
              ({"C": 32, "layers": 8}, 1), ({"C": 36, "layers": 8}, 0.5), ({"C": 36, "layers": 14}, 0.25),
              ({"C": 36, "layers": 20}, 0.5)],
}
#: Held-out evaluation sizes per space: the proxy size and the standard training size.
DEFAULT_EVAL_SIZES: dict[str, list[dict[str, int]]] = {
    "nb201": [{"C": 8, "N": 1}, {"C": 16, "N": 5}],
    "darts": [{"C": 8, "layers": 5}, {"C": 16, "layers": 8}],
}


def size_label(build_kwargs: dict[str, Any]) -> str:
    """``{'C': 8, 'N': 1}`` -> ``'C=8,N=1'`` (keys in the order given)."""
    return ",".join(f"{k}={v}" for k, v in build_kwargs.items()) or "default"


def _parse_size_spec(spec: str, what: str) -> list[dict[str, Any]]:
    out = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        kv, _, weight = part.partition("@")
        entry: dict[str, Any] = {"build": parse_size(kv, what)}
        if weight:
            try:
                entry["weight"] = float(weight)
            except ValueError:
                raise ValueError(f"{what}: weight {weight!r} of {kv!r} is not a number") from None
        out.append(entry)
    if not out:
        raise ValueError(f"{what}: empty size spec {spec!r}")
    return out


def _size_list(value: Any, what: str, keywords: tuple[str, ...]) -> Any:
    """Validate a ``sizes``/``eval_sizes`` value: a keyword, a spec string or a list of
    ``{'build': {...}, 'weight': w, 'images': n}`` dicts (weight and images optional)."""
    if isinstance(value, str):
        if value in keywords:
            return value
        value = _parse_size_spec(value, what)
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{what} must be one of {keywords}, a spec like 'C=8,N=1@4;C=16,N=5' "
                         f"or a non-empty list of {{'build': {{...}}, 'weight': w}}; got {value!r}")
    out = []
    for e in value:
        if not isinstance(e, dict) or not isinstance(e.get("build"), dict) \
                or set(e) - {"build", "weight", "images"}:
            raise ValueError(f"{what}: each size is a dict with 'build' (and optional 'weight', "
                             f"'images'); got {e!r}")
        e = {"build": dict(e["build"]), **{k: e[k] for k in ("weight", "images") if k in e}}
        if "weight" in e and not (float(e["weight"]) > 0 and math.isfinite(float(e["weight"]))):
            raise ValueError(f"{what}: weight must be a positive number, got {e['weight']!r}")
        if "images" in e and int(e["images"]) < 2:
            raise ValueError(f"{what}: images must be >= 2, got {e['images']!r}")
        out.append(e)
    return tuple(out)


def resolve_sizes(cfg: "MetaTrainConfig", space_name: str, build_kwargs: dict[str, Any],
                  cost: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The explicit training and evaluation sizes of a run.

    Returns ``(train, eval)``: ``train`` entries have ``build``, a normalised ``weight``
    and the ``images`` per step; ``eval`` entries have ``build``. ``cost(build_kwargs)``
    estimates the compute of one network of that size (default: multiply-accumulates of
    one sampled architecture); it sizes the image counts not given explicitly.
    """
    mode = cfg.sizes
    if mode == "auto":
        mode = "fixed" if cfg.build_kwargs or cfg.archset else "space"
    if mode == "fixed":
        train = [{"build": dict(build_kwargs), "weight": 1.0}]
    elif mode == "space":
        if space_name not in DEFAULT_SIZES:
            raise ValueError(f"no default multi-size distribution for space {space_name!r} "
                             f"(known: {sorted(DEFAULT_SIZES)}); pass sizes='fixed' or a spec")
        train = [{"build": dict(b), "weight": float(w)} for b, w in DEFAULT_SIZES[space_name]]
    else:
        train = [dict(e, build=dict(e["build"])) for e in cfg.sizes]
    total = sum(float(e.get("weight", 1.0)) for e in train)
    for e in train:  # normalised once: a resolved list resolves to itself (resume compares them)
        e["weight"] = float(e.get("weight", 1.0)) / (1.0 if abs(total - 1.0) < 1e-9 else total)
    if any("images" not in e for e in train):
        if len(train) == 1:
            train[0].setdefault("images", cfg.batch_size)
        else:
            costs = [float(cost(e["build"])) for e in train]
            cheapest = min(costs)
            for e, c in zip(train, costs):
                n = cfg.batch_size * math.sqrt(cheapest / c)
                e.setdefault("images", int(min(cfg.batch_size, max(cfg.min_images, round(n)))))  # <= batch_size
    for e in train:
        e["images"] = int(min(cfg.batch_size, e["images"]))
    if cfg.eval_sizes == "train":
        evals = [{"build": dict(e["build"])} for e in train]
    elif cfg.eval_sizes == "space" or (cfg.eval_sizes == "auto" and mode == "space"):
        evals = [{"build": dict(b)} for b in DEFAULT_EVAL_SIZES.get(space_name, [])] \
            or [{"build": dict(train[0]["build"])}]
    elif cfg.eval_sizes == "auto":
        evals = [{"build": dict(e["build"])} for e in train]
    else:
        evals = [{"build": dict(e["build"])} for e in cfg.eval_sizes]
    return train, evals


@dataclass
class MetaTrainConfig:
    """Everything that defines a meta-training run (saved as ``config.json``).

    Attributes:
        space: search space name (``'nb201'``, ``'darts'`` or a registered one).
        data: image data for :func:`ghnas.data.load` (``'cifar10'``, ``'imagefolder:PATH'``
            or ``'sample'``); training uses its ``train`` split, evaluation its ``val`` split.
        data_root: ``root`` for :func:`ghnas.data.load`.
        archset: optional HDF5 architecture dataset (:mod:`ghnas.archset`); training
            samples its ``train`` split and evaluation uses its ``val`` split. Without it,
            architectures are sampled from the space and ``eval_archs`` held-out ones are
            excluded from training.
        build_kwargs: network size passed to ``space.build`` when ``sizes='fixed'``
            (ignored with ``archset``, which records its own).
        sizes: the distribution of network sizes that the architectures of a step are
            built at, one size drawn per architecture. ``'space'``: the space's
            multi-size distribution (:data:`DEFAULT_SIZES`: widths and depths from the
            proxy sizes to the sizes users train, weighted towards small networks);
            ``'fixed'``: ``build_kwargs`` only; ``'auto'`` (default): ``'fixed'`` when
            ``build_kwargs`` or ``archset`` is given, else ``'space'``; or a spec such as
            ``'C=8,N=1@4;C=16,N=5@1'``
            (``;``-separated sizes, ``@weight`` optional). Saved in ``config.json`` as an
            explicit list with the image count of each size.
        min_images: fewest images a large network is evaluated on in a step. Each size
            gets ``batch_size * sqrt(cost of the cheapest size / its cost)`` images (cost:
            multiply-accumulates of one forward pass), at least this many, so that a
            large network costs at most a few small ones.
        eval_sizes: sizes of the held-out evaluation: ``'space'``: the proxy size and the
            standard training size of the space (:data:`DEFAULT_EVAL_SIZES`); ``'train'``:
            every training size; ``'auto'`` (default): ``'space'`` when training on the
            space's default sizes, else ``'train'``; or a spec as for ``sizes``. The held-out mean accuracy
            that selects ``ghn_best.pt`` is the mean over these sizes.
        ema: decay of an exponential moving average of the GHN's weights (0: none). With
            it, evaluations, ``ghn.pt`` and ``ghn_best.pt`` use the averaged weights,
            which move less from one checkpoint to the next.
        steps: total optimisation steps.
        meta_batch: architectures per step.
        batch_size: images per step (shared by the architectures of the meta-batch).
        lr, weight_decay: Adam settings.
        lr_drops: fractions of ``steps`` at which the learning rate is multiplied by
            ``gamma`` (GHN-2 drops at epochs 200 and 250 of 300).
        gamma: learning-rate factor of each drop.
        grad_clip: gradient-norm clipping threshold.
        hid, max_shape, ve_cutoff: GHN-2 size (hidden units, decoder output shape,
            virtual-edge cutoff).
        eval_every: evaluate every this many steps (0: only at the end).
        eval_archs: held-out architectures in each evaluation.
        eval_images: held-out images in each evaluation.
        eval_batch: images per evaluation batch (batch norm uses batch statistics).
        ckpt_every: write the resumable checkpoint every this many steps.
        keep_every: also keep the published GHN of every this many steps as
            ``ghn_step<N>.pt`` (0: none), for curves of what the GHN does against training.
        augment: random crop + flip on training images.
        seed: seeds everything.
        device: ``'cpu'``, ``'cuda'``, ... ; ``'auto'`` picks CUDA when present.
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        workers: processes that build the networks and graphs of upcoming steps while
            the GHN trains (0: in the training loop). Worth it when a GPU does the
            training and graph extraction on the CPU becomes the bottleneck; the steps
            taken are the same for any value.
    """

    space: str = "nb201"
    data: str = "cifar10"
    data_root: str | None = None
    archset: str | None = None
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    sizes: Any = "auto"
    min_images: int = 16
    eval_sizes: Any = "auto"
    ema: float = 0.0
    steps: int = 1000
    meta_batch: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_drops: tuple[float, ...] = (0.67, 0.83)
    gamma: float = 0.1
    grad_clip: float = 5.0
    hid: int = 32
    max_shape: tuple[int, int, int, int] = (64, 64, 11, 11)
    ve_cutoff: int = 50
    eval_every: int = 100
    eval_archs: int = 20
    eval_images: int = 500
    eval_batch: int = 100
    ckpt_every: int = 25
    keep_every: int = 0
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        self.lr_drops = tuple(float(x) for x in self.lr_drops)
        self.max_shape = tuple(int(x) for x in self.max_shape)  # type: ignore[assignment]
        for name in ("steps", "meta_batch", "batch_size", "hid", "eval_images", "eval_batch",
                     "ckpt_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.eval_archs < 0 or self.workers < 0 or self.keep_every < 0:
            raise ValueError("eval_every, eval_archs, workers and keep_every must be >= 0")
        if any(not 0 < d < 1 for d in self.lr_drops):
            raise ValueError(f"lr_drops are fractions of the run in (0, 1), got {self.lr_drops}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay in [0, 1), got {self.ema}")
        if self.min_images < 2:
            raise ValueError(f"min_images must be >= 2 (batch norm needs a batch), got {self.min_images}")
        self.sizes = _size_list(self.sizes, "sizes", ("auto", "space", "fixed"))
        self.eval_sizes = _size_list(self.eval_sizes, "eval_sizes", ("auto", "space", "train"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_drops"], d["max_shape"] = list(self.lr_drops), list(self.max_shape)
        for k in ("sizes", "eval_sizes"):
            if not isinstance(d[k], str):
                d[k] = [dict(x) for x in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown meta-training settings {sorted(unknown)}; valid: {sorted(known)}")
        d = dict(d)
        if "sizes" not in d:  # written before multi-size training: one fixed size
            d["sizes"], d["eval_sizes"] = "fixed", "train"
        return cls(**d)


@dataclass
class MetaTrainResult:
    """What a run produced: its folder, the last step, and the learning curve."""

    out_dir: Path
    step: int
    history: list[dict[str, float]]
    evals: list[dict[str, float]]
    seconds: float

    @property
    def ghn_path(self) -> Path:
        return self.out_dir / GHN_FILE

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "step": self.step, "history": self.history,
                "evals": self.evals, "seconds": self.seconds}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lr_at(step: int, cfg: MetaTrainConfig) -> float:
    """Learning rate of ``step`` (0-based): ``lr`` times ``gamma`` per drop passed."""
    drops = sum(step >= math.floor(f * cfg.steps) for f in cfg.lr_drops)
    return cfg.lr * cfg.gamma ** drops


def _key(build_kwargs: dict[str, Any]) -> tuple:
    return tuple(sorted(build_kwargs.items()))


class _ArchPool:
    """Training and held-out architectures, with cached models and graphs per size."""

    def __init__(self, cfg: MetaTrainConfig, cache_size: int = 512):
        import search_spaces

        self.cfg = cfg
        if cfg.archset:
            from ghnas.archset import ArchSet

            aset = ArchSet(cfg.archset)
            self.space = search_spaces.get(aset.space)
            if aset.space != search_spaces.get(cfg.space).name:
                raise ValueError(f"archset {cfg.archset} holds space {aset.space!r}, "
                                 f"but the config says space={cfg.space!r}")
            self.build_kwargs = dict(aset.build_kwargs)
            train = aset["train"]
            if len(train) == 0:
                raise ValueError(f"archset {cfg.archset} has an empty train split")
            self.train_archs: list[str] | None = train.arch
            size = _key(self.build_kwargs)
            self._graphs = {(a, size): g for a, g in zip(train.arch, train.graphs)}
            val = aset["val"] if "val" in aset.splits else None
            self.heldout = (val.arch[:cfg.eval_archs] if val is not None else [])
            if val is not None:
                self._graphs.update({(a, size): g for a, g in zip(val.arch, val.graphs)})
        else:
            self.space = search_spaces.get(cfg.space)
            self.build_kwargs = dict(cfg.build_kwargs)
            self.train_archs = None
            self._graphs = {}
            # a seed stream of its own, so the held-out set does not move with cfg.steps
            self.heldout = (self.space.sample_many(cfg.eval_archs, seed=np.random.default_rng([cfg.seed, 7919]),
                                                   unique=True)
                            if cfg.eval_archs else [])
        self._heldout_hashes = {self.space.hash(a) for a in self.heldout}
        self._models: OrderedDict[tuple, nn.Module] = OrderedDict()
        self._cache_size = cache_size

    def sample(self, rng: np.random.Generator, n: int) -> list[str]:
        if self.train_archs is not None:
            return [self.train_archs[i] for i in rng.integers(len(self.train_archs), size=n)]
        out = []
        while len(out) < n:
            a = self.space.sample(rng)
            if self.space.hash(a) not in self._heldout_hashes:  # held-out archs are never trained on
                out.append(a)
        return out

    def model(self, arch: str, device: torch.device, build_kwargs: dict[str, Any] | None = None) -> nn.Module:
        build = self.build_kwargs if build_kwargs is None else build_kwargs
        key = (arch, _key(build))
        m = self._models.get(key)
        if m is None:
            m = self.space.build(arch, **build).to(device)
            self._models[key] = m
            if len(self._models) > self._cache_size:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(key)
        return m

    def graph(self, arch: str, model: nn.Module, build_kwargs: dict[str, Any] | None = None):
        build = self.build_kwargs if build_kwargs is None else build_kwargs
        key = (arch, _key(build))
        g = self._graphs.get(key)
        if g is None:
            from ghnas.graph import extract

            with warnings.catch_warnings():
                # degenerate cells (all-`none` paths) leave parameters unused; training
                # simply does not update them, so the warning is noise here
                warnings.simplefilter("ignore", UserWarning)
                g = extract(model)
            if len(self._graphs) < 20000:
                self._graphs[key] = g
        return g

    def cost(self, build_kwargs: dict[str, Any]) -> float:
        """Multiply-accumulates of one forward pass of a fixed sampled architecture."""
        from ghnas.proxies.size import count_flops

        arch = self.space.sample(np.random.default_rng(0))
        return float(count_flops(self.space.build(arch, **build_kwargs), elementwise=False))


class _StepInputs(torch.utils.data.Dataset):
    """What step ``i`` trains on, apart from the GHN's weights: its architectures, the size
    and image count of each, their (CPU) networks, their graphs prepared as one batch, and
    the seed of its image batch.

    Indexed by step and drawn from generators seeded by ``(seed, step)``, so worker
    processes (a torch ``DataLoader``) can prepare steps ahead of the training loop without
    changing what any step sees, and a resumed run sees the same steps.
    """

    def __init__(self, pool: _ArchPool, cfg: MetaTrainConfig, shape_enc, num_classes: int):
        self.pool, self.cfg, self.shape_enc, self.num_classes = pool, cfg, shape_enc, num_classes
        self._p = np.array([e["weight"] for e in cfg.sizes], dtype=np.float64)

    def __len__(self) -> int:
        return self.cfg.steps

    def sizes_of(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        if len(self.cfg.sizes) == 1:  # no draw: single-size runs replay the steps of older versions
            return [self.cfg.sizes[0]] * n
        return [self.cfg.sizes[i] for i in rng.choice(len(self.cfg.sizes), size=n, p=self._p / self._p.sum())]

    def __getitem__(self, step: int):
        from ghnas.ghn.batch import GraphBatch
        from ghnas.ghn.model import check_num_classes

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        image_seed = int(rng.integers(2**62))
        archs = self.pool.sample(rng, cfg.meta_batch)
        sizes = self.sizes_of(rng, cfg.meta_batch)
        models = [self.pool.model(a, torch.device("cpu"), s["build"]) for a, s in zip(archs, sizes)]
        graphs = [self.pool.graph(a, m, s["build"]) for a, m, s in zip(archs, models, sizes)]
        check_num_classes(graphs, self.num_classes)
        batch = GraphBatch(graphs, self.shape_enc, cfg.max_shape, cfg.ve_cutoff, "cpu")
        item = step, archs, [int(s["images"]) for s in sizes], image_seed, models, batch
        if torch.utils.data.get_worker_info() is not None:
            # one plain byte string per step: torch's shared-memory passing would open a file
            # descriptor per tensor (hundreds per step), exhausting the process's limit
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        return item


def _as_is(item):
    return item


def _step_inputs(data: _StepInputs, start: int, workers: int):
    """Iterate over the inputs of steps ``start, start+1, ...`` (prefetched by ``workers``
    processes when ``workers > 0``)."""
    steps = range(start, len(data))
    if workers == 0:
        return (data[i] for i in steps)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=steps, num_workers=workers,
                                         collate_fn=_as_is, prefetch_factor=4)
    return (pickle.loads(item) for item in loader)


def _train_mode(models: Sequence[nn.Module]) -> None:
    # batch statistics in BN: predicted networks have no running statistics
    for m in models:
        m.train()


@torch.no_grad()
def evaluate_ghn(ghn, pool: "_ArchPool", archs: Sequence[str], data, device: torch.device,
                 batch: int = 100, amp: bool = False, build_kwargs: dict[str, Any] | None = None,
                 per_arch: bool = False) -> dict[str, Any]:
    """Accuracy of GHN-predicted parameters on ``data`` for each of ``archs``.

    Networks are built at ``build_kwargs`` (default: the pool's size). Returns mean, max
    and min accuracy over the architectures and their mean loss (with ``per_arch``, also
    the lists ``accs`` and ``losses``). Batch norm uses batch statistics (``batch`` images
    at a time); see :func:`ghnas.ghn.evaluate.evaluate_predicted`.
    """
    from ghnas.ghn.evaluate import evaluate_predicted

    if not archs:
        return {}
    ghn.eval()
    x = torch.cat([xb for xb, _ in data.batches(len(data), device=device)])
    y = data.labels.to(device)
    accs, losses = [], []
    for i in range(0, len(archs), 8):  # predict in chunks to bound memory
        chunk = archs[i:i + 8]
        models = [pool.model(a, device, build_kwargs) for a in chunk]
        graphs = [pool.graph(a, m, build_kwargs) for a, m in zip(chunk, models)]
        for model, params in zip(models, ghn.predict(graphs)):
            res = evaluate_predicted(model, params, x, y, batch, amp)
            accs.append(res.acc)
            losses.append(res.loss)
    out: dict[str, Any] = {"acc_mean": float(np.mean(accs)), "acc_max": float(np.max(accs)),
                           "acc_min": float(np.min(accs)), "loss_mean": float(np.mean(losses)),
                           "n_archs": len(archs)}
    if per_arch:
        out["accs"], out["losses"] = [float(a) for a in accs], [float(v) for v in losses]
    return out


def meta_step(ghn, opt: torch.optim.Optimizer, models: Sequence[nn.Module], graphs, x: torch.Tensor,
              y: torch.Tensor, grad_clip: float = 5.0, amp: bool = False,
              images: Sequence[int] | None = None) -> tuple[float, float, float]:
    """One GHN update on one image batch for a meta-batch of networks.

    Predicts the parameters of all ``models`` (whose graphs are ``graphs``: a list of
    graphs or a prepared ``GraphBatch``) in one GHN call, averages their cross-entropy on
    ``(x, y)`` (network ``i`` on the first ``images[i]`` images, default all), clips the
    gradient norm and steps ``opt``. Returns the loss, the accuracy over all evaluated
    images and the gradient norm.
    """
    from ghnas.ghn.batch import GraphBatch
    from ghnas.ghn.evaluate import logits

    counts = [len(y)] * len(models) if images is None else [min(int(n), len(y)) for n in images]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        preds = ghn.predict(graphs if isinstance(graphs, GraphBatch) else list(graphs))
        losses, correct = [], torch.zeros((), dtype=torch.long, device=x.device)
        for model, params, n in zip(models, preds, counts):
            out = logits(model, params, x[:n])
            losses.append(F.cross_entropy(out.float(), y[:n]))
            correct += (out.argmax(1) == y[:n]).sum()  # summed on the device: one sync per step
        loss = torch.stack(losses).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"meta-training loss became {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = float(nn.utils.clip_grad_norm_(ghn.parameters(), grad_clip))
    opt.step()
    return float(loss.detach()), int(correct) / sum(counts), gnorm


def plot_curve(history: Sequence[dict], evals: Sequence[dict], path: Path, title: str = "") -> None:
    """Learning curve: training loss (smoothed) and held-out accuracy of predicted networks,
    one line per evaluation size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(7, 4))
    if history:
        steps = np.array([h["step"] for h in history])
        loss = np.array([h["loss"] for h in history])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8)
        ax1.plot(steps[k - 1:], smooth, color="tab:blue", label="train loss")
        ax1.set_ylabel("meta-training loss", color="tab:blue")
    ax1.set_xlabel("step")
    if evals:
        ax2 = ax1.twinx()
        es = [e["step"] for e in evals]
        labels = list(evals[-1].get("by_size", {}))
        if len(labels) > 1:
            colors = plt.cm.autumn(np.linspace(0, 0.8, len(labels)))
            for lab, col in zip(labels, colors):
                pts = [(e["step"], 100 * e["by_size"][lab]["acc_mean"]) for e in evals if lab in e.get("by_size", {})]
                ax2.plot(*zip(*pts), "o-", color=col, label=f"held-out mean acc, {lab}")
        else:
            ax2.plot(es, [100 * e["acc_mean"] for e in evals], "o-", color="tab:red", label="held-out mean acc")
            ax2.plot(es, [100 * e["acc_max"] for e in evals], "s--", color="tab:orange", label="held-out max acc")
        ax2.axhline(10, color="gray", ls=":", lw=1, label="chance (10%)")
        ax2.set_ylabel("accuracy of predicted params (%)", color="tab:red")
        ax2.legend(loc="center right", fontsize=8)
    ax1.set_title(title or "GHN meta-training")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def _load_state(path: Path) -> dict[str, Any]:
    from ghnas._io import load_checkpoint
    from ghnas.ghn.hub import check_finite

    state = load_checkpoint(path, required=("config", "ghn", "optimizer", "step", "history", "evals",
                                            "seconds", "best"), what="meta-training state")
    check_finite(state["ghn"], str(path))
    return state


class _EMA:
    """Exponential moving average of a module's floating-point state, with the usual
    warm-up (decay ``min(d, (1 + t) / (10 + t))``) so early averages are not stuck at init."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for a, b in zip(self.module.state_dict().values(), module.state_dict().values()):
            if a.dtype.is_floating_point:
                a.lerp_(b, 1 - d)
            else:
                a.copy_(b)


def meta_train(out_dir: str | os.PathLike, config: MetaTrainConfig | None = None,
               resume: bool = False, progress: bool = True, **overrides: Any) -> MetaTrainResult:
    """Meta-train a GHN-2 on architectures of a search space.

    Args:
        out_dir: run folder. It receives ``config.json`` (with the sizes resolved into an
            explicit list), the resumable ``state.pt`` (written atomically every
            ``ckpt_every`` steps), ``ghn.pt`` (the GHN in ppuda's checkpoint format,
            loadable with :func:`ghnas.load_ghn`; the averaged weights when ``ema > 0``),
            ``ghn_best.pt`` (best held-out mean accuracy over the evaluation sizes),
            ``history.json`` and ``curve.png``.
        config: run settings; ``overrides`` replace single fields.
        resume: continue the run in ``out_dir`` from its last checkpoint. Only
            ``steps``, ``eval_every``, ``ckpt_every``, ``device`` and ``workers`` may
            change. Without ``resume``, an ``out_dir`` that already holds a run is an
            error (never overwrite work).
        progress: show a progress bar with loss and throughput.

    Returns:
        a :class:`MetaTrainResult`.
    """
    out = Path(out_dir)
    cfg = config or MetaTrainConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    state_path = out / STATE_FILE
    state = None
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        state = _load_state(state_path)
        saved = MetaTrainConfig.from_dict(state["config"])
        if config is None:
            cfg = dataclasses.replace(saved, **overrides) if overrides else saved
    elif state_path.exists():
        raise FileExistsError(f"{out} already holds a meta-training run; pass resume=True "
                              "(--resume) to continue it, or choose another folder")

    device = _resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    pool = _ArchPool(cfg)
    train_sizes, eval_sizes = resolve_sizes(cfg, pool.space.name, pool.build_kwargs, pool.cost)
    cfg = dataclasses.replace(cfg, sizes=tuple(train_sizes), eval_sizes=tuple(eval_sizes))
    if state is not None:
        diff = {k for k, v in saved.to_dict().items() if cfg.to_dict()[k] != v} - _RESUMABLE_CHANGES
        if diff:
            raise InputError(f"cannot resume {out} with different settings {sorted(diff)}: "
                             + ", ".join(f"{k}: saved {saved.to_dict()[k]!r} vs {cfg.to_dict()[k]!r}"
                                         for k in sorted(diff)))
    pool.cfg = cfg
    from ghnas._io import RunFolder

    # one run at a time in a folder: a second process (resuming the same run) is refused
    with RunFolder(out, "meta-train", {k: v for k, v in cfg.to_dict().items() if k not in _RESUMABLE_CHANGES}):
        return _train(out, cfg, pool, state, device, amp, progress)


def _train(out: Path, cfg: MetaTrainConfig, pool: "_ArchPool", state: dict[str, Any] | None,
           device: torch.device, amp: bool, progress: bool) -> MetaTrainResult:
    from tqdm.auto import tqdm

    import ghnas.data
    from ghnas.ghn import GHN2, save_ghn

    state_path = out / STATE_FILE
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))

    if cfg.data == "sample":
        # the shipped sample holds only test images: fine for smoke tests, not for real runs
        warnings.warn("meta-training on the shipped CIFAR-10 sample (test images): use it only "
                      "for smoke tests; real runs need data='cifar10'", stacklevel=2)
        train_split = eval_split = "test"
    else:
        train_split, eval_split = "train", "val"
    train_data = ghnas.data.load(cfg.data, root=cfg.data_root, split=train_split, seed=cfg.seed).to(device)
    eval_data = ghnas.data.load(cfg.data, root=cfg.data_root, split=eval_split, seed=cfg.seed)
    eval_data = eval_data.subset(min(cfg.eval_images, len(eval_data)), seed=cfg.seed).to(device)

    ghn = GHN2(max_shape=cfg.max_shape, num_classes=len(train_data.classes), hid=cfg.hid,
               ve_cutoff=cfg.ve_cutoff)
    ghn.shape_enc.warn_unknown = False  # it learns the (mapped) shapes of this space
    # graph batches are prepared on the CPU (maybe in workers) with a copy of the shape encoder
    step_data = _StepInputs(pool, cfg, copy.deepcopy(ghn.shape_enc), ghn.num_classes)
    ghn = ghn.to(device)
    opt = torch.optim.Adam(ghn.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = _EMA(ghn, cfg.ema) if cfg.ema > 0 else None
    step, history, evals, seconds = 0, [], [], 0.0
    best = -1.0
    if state is not None:
        ghn.load_state_dict(state["ghn"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.updates = int(state["ema_updates"])
        step, history, evals = int(state["step"]), list(state["history"]), list(state["evals"])
        seconds, best = float(state["seconds"]), float(state["best"])
        if not (out / BEST_FILE).exists():  # a run folder rebuilt from its state alone
            best = -1.0

    def published() -> nn.Module:  # the weights a user gets
        return ghn if ema is None else ema.module

    def checkpoint() -> None:
        extra = {} if ema is None else {"ema": ema.module.state_dict(), "ema_updates": ema.updates}
        atomic_torch_save({"config": cfg.to_dict(), "ghn": ghn.state_dict(),
                            "optimizer": opt.state_dict(), "step": step, "history": history,
                            "evals": evals, "seconds": seconds, "best": best, **extra}, state_path)
        save_ghn(published(), out / GHN_FILE, epoch=step)
        atomic_write_text(out / HISTORY_FILE, json.dumps({"history": history, "evals": evals}))

    def run_eval() -> None:
        nonlocal best
        if not pool.heldout:
            return
        by_size = {}
        for e in cfg.eval_sizes:
            by_size[size_label(e["build"])] = evaluate_ghn(published(), pool, pool.heldout, eval_data, device,
                                                           cfg.eval_batch, amp, e["build"])
        res: dict[str, Any] = {k: float(np.mean([r[k] for r in by_size.values()]))
                               for k in ("acc_mean", "acc_max", "acc_min", "loss_mean")}
        res.update(n_archs=len(pool.heldout), step=step, by_size=by_size)
        evals.append(res)
        if res["acc_mean"] > best:
            best = res["acc_mean"]
            save_ghn(published(), out / BEST_FILE, epoch=step)
        plot_curve(history, evals, out / CURVE_FILE, f"GHN-2 on {pool.space.name} ({eval_split} images)")
        ghn.train()

    bar = tqdm(total=cfg.steps, initial=step, desc=f"meta-train {pool.space.name}",
               disable=not progress, dynamic_ncols=True)
    ghn.train()
    t_last = time.perf_counter()
    try:
        for item_step, archs, images, image_seed, models, graphs in _step_inputs(step_data, step, cfg.workers):
            assert item_step == step, (item_step, step)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            gen = torch.Generator().manual_seed(image_seed)
            idx = torch.randint(len(train_data), (cfg.batch_size,), generator=gen)
            x = train_data.images[idx.to(train_data.images.device)]
            if cfg.augment:
                x = ghnas.data.random_crop_flip(x, generator=gen)
            x, y = train_data.normalize(x), train_data.labels[idx.to(train_data.labels.device)]
            x = x.contiguous(memory_format=torch.channels_last)  # ~2x faster pooling/dw convs on CPU
            models = [m.to(device) for m in models]
            _train_mode(models)
            try:
                loss, acc, gnorm = meta_step(ghn, opt, models, graphs, x, y, cfg.grad_clip, amp, images)
            except FloatingPointError as e:
                raise FloatingPointError(f"{e} at step {step} (architectures {archs}); "
                                         "lower lr or check the data") from None
            if ema is not None:
                ema.update(ghn)
            step += 1
            now = time.perf_counter()
            seconds += now - t_last
            history.append({"step": step, "loss": loss, "acc": acc, "grad_norm": gnorm,
                            "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 3),
                            "images": int(sum(images))})
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{history[-1]['acc']:.2f}",
                            archs_s=f"{cfg.meta_batch / max(now - t_last, 1e-9):.1f}")
            bar.update()
            t_last = now
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                run_eval()
                t_last = time.perf_counter()
            if step % cfg.ckpt_every == 0:
                checkpoint()
            if cfg.keep_every and step % cfg.keep_every == 0:
                save_ghn(published(), out / f"ghn_step{step}.pt", epoch=step)
        if not evals or evals[-1]["step"] != step:
            run_eval()
        checkpoint()
    finally:
        bar.close()
    return MetaTrainResult(out_dir=out, step=step, history=history, evals=evals, seconds=seconds)
