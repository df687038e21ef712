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
from torch.func import functional_call

from ghnas._io import atomic_savefig, atomic_torch_save, atomic_write_text

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
GHN_FILE = "ghn.pt"
BEST_FILE = "ghn_best.pt"
HISTORY_FILE = "history.json"
CURVE_FILE = "curve.png"

# settings that may differ when a run is resumed: they change neither the model nor
# the sequence of training steps already taken
_RESUMABLE_CHANGES = {"steps", "eval_every", "ckpt_every", "device", "eval_archs_max_batch", "workers"}


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
        build_kwargs: network size passed to ``space.build`` (ignored with ``archset``,
            which records its own).
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
        if self.eval_every < 0 or self.eval_archs < 0 or self.workers < 0:
            raise ValueError("eval_every, eval_archs and workers must be >= 0")
        if any(not 0 < d < 1 for d in self.lr_drops):
            raise ValueError(f"lr_drops are fractions of the run in (0, 1), got {self.lr_drops}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_drops"], d["max_shape"] = list(self.lr_drops), list(self.max_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaTrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown meta-training settings {sorted(unknown)}; valid: {sorted(known)}")
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


class _ArchPool:
    """Training and held-out architectures, with cached models and graphs."""

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
            self._graphs = dict(zip(train.arch, train.graphs))
            val = aset["val"] if "val" in aset.splits else None
            self.heldout = (val.arch[:cfg.eval_archs] if val is not None else [])
            if val is not None:
                self._graphs.update(zip(val.arch, val.graphs))
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
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
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

    def model(self, arch: str, device: torch.device) -> nn.Module:
        m = self._models.get(arch)
        if m is None:
            m = self.space.build(arch, **self.build_kwargs).to(device)
            self._models[arch] = m
            if len(self._models) > self._cache_size:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(arch)
        return m

    def graph(self, arch: str, model: nn.Module):
        g = self._graphs.get(arch)
        if g is None:
            from ghnas.graph import extract

            with warnings.catch_warnings():
                # degenerate cells (all-`none` paths) leave parameters unused; training
                # simply does not update them, so the warning is noise here
                warnings.simplefilter("ignore", UserWarning)
                g = extract(model)
            if len(self._graphs) < 20000:
                self._graphs[arch] = g
        return g


class _StepInputs(torch.utils.data.Dataset):
    """What step ``i`` trains on, apart from the GHN's weights: its architectures, their
    (CPU) networks, their graphs prepared as one batch, and the seed of its image batch.

    Indexed by step and drawn from generators seeded by ``(seed, step)``, so worker
    processes (a torch ``DataLoader``) can prepare steps ahead of the training loop without
    changing what any step sees, and a resumed run sees the same steps.
    """

    def __init__(self, pool: _ArchPool, cfg: MetaTrainConfig, shape_enc, num_classes: int):
        self.pool, self.cfg, self.shape_enc, self.num_classes = pool, cfg, shape_enc, num_classes

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int):
        from ghnas.ghn.batch import GraphBatch
        from ghnas.ghn.model import check_num_classes

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        image_seed = int(rng.integers(2**62))
        archs = self.pool.sample(rng, cfg.meta_batch)
        models = [self.pool.model(a, torch.device("cpu")) for a in archs]
        graphs = [self.pool.graph(a, m) for a, m in zip(archs, models)]
        check_num_classes(graphs, self.num_classes)
        batch = GraphBatch(graphs, self.shape_enc, cfg.max_shape, cfg.ve_cutoff, "cpu")
        item = step, archs, image_seed, models, batch
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


def _logits(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    out = functional_call(model, params, (x,), strict=False)
    return out[0] if isinstance(out, (tuple, list)) else out


def _train_mode(models: Sequence[nn.Module]) -> None:
    # batch statistics in BN: predicted networks have no running statistics
    for m in models:
        m.train()


@torch.no_grad()
def evaluate_ghn(ghn, pool: "_ArchPool", archs: Sequence[str], data, device: torch.device,
                 batch: int = 100, amp: bool = False) -> dict[str, float]:
    """Accuracy of GHN-predicted parameters on ``data`` for each of ``archs``.

    Returns mean, max and min accuracy over the architectures and their mean loss.
    Batch norm uses batch statistics (``batch`` images at a time).
    """
    if not archs:
        return {}
    ghn.eval()
    accs, losses = [], []
    models = [pool.model(a, device) for a in archs]
    _train_mode(models)
    preds = []
    for i in range(0, len(archs), 8):  # predict in chunks to bound memory
        chunk = archs[i:i + 8]
        graphs = [pool.graph(a, m) for a, m in zip(chunk, models[i:i + 8])]
        preds.extend(ghn.predict(graphs))
    for model, params in zip(models, preds):
        correct, loss_sum, n = 0, 0.0, 0
        for x, y in data.batches(batch, device=device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                out = _logits(model, params, x)
            correct += int((out.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
            n += len(y)
        accs.append(correct / n)
        losses.append(loss_sum / n)
    return {"acc_mean": float(np.mean(accs)), "acc_max": float(np.max(accs)),
            "acc_min": float(np.min(accs)), "loss_mean": float(np.mean(losses)),
            "n_archs": len(archs)}


def meta_step(ghn, opt: torch.optim.Optimizer, models: Sequence[nn.Module], graphs, x: torch.Tensor,
              y: torch.Tensor, grad_clip: float = 5.0, amp: bool = False) -> tuple[float, float, float]:
    """One GHN update on one image batch for a meta-batch of networks.

    Predicts the parameters of all ``models`` (whose graphs are ``graphs``: a list of
    graphs or a prepared ``GraphBatch``) in one GHN call, averages their cross-entropy on
    ``(x, y)``, clips the gradient norm and steps ``opt``. Returns the loss, the accuracy
    over all networks and the gradient norm.
    """
    from ghnas.ghn.batch import GraphBatch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        preds = ghn.predict(graphs if isinstance(graphs, GraphBatch) else list(graphs))
        losses, correct = [], torch.zeros((), dtype=torch.long, device=x.device)
        for model, params in zip(models, preds):
            out = _logits(model, params, x)
            losses.append(F.cross_entropy(out.float(), y))
            correct += (out.argmax(1) == y).sum()  # summed on the device: one sync per step
        loss = torch.stack(losses).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"meta-training loss became {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = float(nn.utils.clip_grad_norm_(ghn.parameters(), grad_clip))
    opt.step()
    return float(loss.detach()), int(correct) / (len(models) * len(y)), gnorm


def plot_curve(history: Sequence[dict], evals: Sequence[dict], path: Path, title: str = "") -> None:
    """Learning curve: training loss (smoothed) and held-out accuracy of predicted networks."""
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
        ax2.plot(es, [100 * e["acc_mean"] for e in evals], "o-", color="tab:red", label="held-out mean acc")
        ax2.plot(es, [100 * e["acc_max"] for e in evals], "s--", color="tab:orange", label="held-out max acc")
        ax2.axhline(10, color="gray", ls=":", lw=1, label="chance (10%)")
        ax2.set_ylabel("accuracy of predicted params (%)", color="tab:red")
        ax2.legend(loc="center right", fontsize=8)
    ax1.set_title(title or "GHN meta-training")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def meta_train(out_dir: str | os.PathLike, config: MetaTrainConfig | None = None,
               resume: bool = False, progress: bool = True, **overrides: Any) -> MetaTrainResult:
    """Meta-train a GHN-2 on architectures of a search space.

    Args:
        out_dir: run folder. It receives ``config.json``, the resumable ``state.pt``
            (written atomically every ``ckpt_every`` steps), ``ghn.pt`` (the GHN in
            ppuda's checkpoint format, loadable with :func:`ghnas.load_ghn`),
            ``ghn_best.pt`` (best held-out mean accuracy), ``history.json`` and
            ``curve.png``.
        config: run settings; ``overrides`` replace single fields.
        resume: continue the run in ``out_dir`` from its last checkpoint. Only
            ``steps``, ``eval_every``, ``ckpt_every`` and ``device`` may change.
            Without ``resume``, an ``out_dir`` that already holds a run is an error
            (never overwrite work).
        progress: show a progress bar with loss and throughput.

    Returns:
        a :class:`MetaTrainResult`.
    """
    from tqdm.auto import tqdm

    import ghnas.data
    from ghnas.ghn import GHN2, save_ghn

    out = Path(out_dir)
    cfg = config or MetaTrainConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    state_path = out / STATE_FILE
    state = None
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = MetaTrainConfig.from_dict(state["config"])
        if config is None:
            cfg = dataclasses.replace(saved, **overrides) if overrides else saved
        diff = {k for k, v in saved.to_dict().items() if cfg.to_dict()[k] != v} - _RESUMABLE_CHANGES
        if diff:
            raise ValueError(f"cannot resume {out} with different settings {sorted(diff)}: "
                             + ", ".join(f"{k}: saved {saved.to_dict()[k]!r} vs {cfg.to_dict()[k]!r}"
                                         for k in sorted(diff)))
    elif state_path.exists():
        raise FileExistsError(f"{out} already holds a meta-training run; pass resume=True "
                              "(--resume) to continue it, or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2))

    device = _resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    pool = _ArchPool(cfg)
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
    step, history, evals, seconds = 0, [], [], 0.0
    best = -1.0
    if state is not None:
        ghn.load_state_dict(state["ghn"])
        opt.load_state_dict(state["optimizer"])
        step, history, evals = int(state["step"]), list(state["history"]), list(state["evals"])
        seconds, best = float(state["seconds"]), float(state["best"])

    def checkpoint() -> None:
        atomic_torch_save({"config": cfg.to_dict(), "ghn": ghn.state_dict(),
                            "optimizer": opt.state_dict(), "step": step, "history": history,
                            "evals": evals, "seconds": seconds, "best": best}, state_path)
        save_ghn(ghn, out / GHN_FILE, epoch=step)
        atomic_write_text(out / HISTORY_FILE, json.dumps({"history": history, "evals": evals}))

    def run_eval() -> None:
        nonlocal best
        if not pool.heldout:
            return
        res = evaluate_ghn(ghn, pool, pool.heldout, eval_data, device, cfg.eval_batch, amp)
        res["step"] = step
        evals.append(res)
        if res["acc_mean"] > best:
            best = res["acc_mean"]
            save_ghn(ghn, out / BEST_FILE, epoch=step)
        plot_curve(history, evals, out / CURVE_FILE, f"GHN-2 on {pool.space.name} ({eval_split} images)")
        ghn.train()

    bar = tqdm(total=cfg.steps, initial=step, desc=f"meta-train {pool.space.name}",
               disable=not progress, dynamic_ncols=True)
    ghn.train()
    t_last = time.perf_counter()
    try:
        for item_step, archs, image_seed, models, graphs in _step_inputs(step_data, step, cfg.workers):
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
                loss, acc, gnorm = meta_step(ghn, opt, models, graphs, x, y, cfg.grad_clip, amp)
            except FloatingPointError as e:
                raise FloatingPointError(f"{e} at step {step} (architectures {archs}); "
                                         "lower lr or check the data") from None
            step += 1
            now = time.perf_counter()
            seconds += now - t_last
            history.append({"step": step, "loss": loss, "acc": acc, "grad_norm": gnorm,
                            "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{history[-1]['acc']:.2f}",
                            archs_s=f"{cfg.meta_batch / max(now - t_last, 1e-9):.1f}")
            bar.update()
            t_last = now
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                run_eval()
                t_last = time.perf_counter()
            if step % cfg.ckpt_every == 0:
                checkpoint()
        if not evals or evals[-1]["step"] != step:
            run_eval()
        checkpoint()
    finally:
        bar.close()
    return MetaTrainResult(out_dir=out, step=step, history=history, evals=evals, seconds=seconds)
