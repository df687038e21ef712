"""Helpers shared by the GHN benchmarks (eval_shipped_ghns.py, ghn_proxy_curve.py,
bench_warm_start.py): which run a GHN file belongs to, its kept snapshots, the
architectures it never trained on, the two halves of a dev set, and a JSON-lines cache
so that long measurements resume where they stopped.

Not part of the ghnas package: benchmark plumbing only.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: git-ignored (runs/ is in .gitignore): per-checkpoint / per-architecture results
CACHE_ROOT = REPO / "runs" / "bench_cache"
SHARED = REPO.parent / "shared"
#: dev sets per space: (csv, architecture column, accuracy column)
DEV_SETS = {
    "nb201": (SHARED / "data" / "nb201" / "cifar10_dev.csv", "arch", "test_acc"),
    "darts": (SHARED / "data" / "nb301" / "cifar10_dev.csv", "genotype", "val_acc"),
}
HALVES = ("tune", "report")


def repo_relative(text: str) -> str:
    """``text`` (a path or a command line) with this checkout's absolute paths written
    relative to the repository root, so result files read the same on every machine."""
    return text.replace(str(REPO.parent / "shared"), "../shared").replace(str(REPO) + "/", "")


def command_line(script: str, argv: list[str] | None) -> str:
    """How a result file records the command that made it (paths relative to the repo)."""
    import shlex
    import sys

    # quoted as a shell needs it ('C=8,layers=5;C=16,layers=8'), so the line can be pasted
    return repo_relative(f"python benchmarks/{script} " + shlex.join(sys.argv[1:] if argv is None else argv))

_STEP_FILE = re.compile(r"^ghn_step(\d+)\.pt$")


@dataclass
class GHNSource:
    """A GHN file and what is known about how it was trained.

    ``config`` is the meta-training config (``MetaTrainConfig.from_dict`` input), ``step``
    the meta-training steps behind the weights, ``run_dir`` the run folder (``None`` for a
    shipped asset without one), ``label`` a short name for tables.
    """

    path: Path
    config: dict[str, Any]
    step: int
    run_dir: Path | None
    label: str


def snapshot_step(path: str | os.PathLike) -> int | None:
    """``ghn_step1250.pt`` -> 1250; ``None`` for any other file name."""
    m = _STEP_FILE.match(Path(path).name)
    return int(m.group(1)) if m else None


def discover_snapshots(run_dir: str | os.PathLike, every: int = 0, max_step: int | None = None,
                       last: int = 0) -> list[tuple[int, Path]]:
    """The kept snapshots ``ghn_step<N>.pt`` of a run folder as ``(step, path)``, by step.

    Args:
        every: keep only steps that are multiples of this (0: all).
        max_step: drop snapshots after this step.
        last: keep only the last this many (0: all), applied after ``every``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    out = []
    for p in run_dir.iterdir():
        s = snapshot_step(p)
        if s is None or (every and s % every) or (max_step is not None and s > max_step):
            continue
        out.append((s, p))
    out.sort()
    return out[-last:] if last else out


def resolve_ghn_source(ghn: str) -> GHNSource:
    """A GHN given as a shipped name (``ghnas-nb201-cifar10``), a run folder (its
    ``ghn.pt``) or a checkpoint file inside a run folder (``config.json`` next to it)."""
    from ghnas.ghn import load_ghn
    from ghnas.ghn.hub import asset_dir

    p = Path(ghn)
    if not p.exists():
        meta_path = asset_dir() / f"{ghn}.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"--ghn {ghn!r} is neither a file, a run folder nor a shipped GHN "
                                    f"(ghnas/assets/{ghn}.json)")
        meta = json.loads(meta_path.read_text())
        return GHNSource(asset_dir() / f"{ghn}.pt", meta["config"], int(meta["steps_trained"]), None, ghn)
    if p.is_dir():
        p = p / "ghn.pt"
    cfg_path = p.parent / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{p}: no config.json next to it; a GHN file must sit in its "
                                "meta-training run folder so that its training architectures are known")
    step = snapshot_step(p)
    if step is None:  # ghn.pt / ghn_best.pt record the step as the ppuda 'epoch'
        step = int(load_ghn(p).epoch or 0)
    return GHNSource(p, json.loads(cfg_path.read_text()), step, p.parent, f"{p.parent.name}/{p.name}")


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 prefix of a file's bytes: cache entries follow the weights, not the name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def trained_hashes(pool, cfg, steps: int) -> set[str]:
    """Hashes of every architecture a run sampled for training in its first ``steps`` steps.

    Replays ``metatrain._StepInputs.__getitem__``: the step's generator draws the image seed
    first, then the meta-batch's architectures (the sizes come after and do not matter).
    """
    out = set()
    for step in range(steps):
        rng = np.random.default_rng([cfg.seed, step])
        rng.integers(2**62)  # the image seed
        out.update(pool.space.hash(a) for a in pool.sample(rng, cfg.meta_batch))
    return out


def never_trained(pool, cfg, n: int, seed: int, steps: int | None = None,
                  include_heldout: bool = True) -> tuple[list[str], dict[str, int]]:
    """Up to ``n`` architectures the run never trained on, and how they were found.

    The run's own held-out architectures come first (excluded from training by
    construction; they monitored the run on validation images), then fresh samples whose
    hash is outside everything the run samples in ``steps`` steps (default: the whole
    planned run, ``cfg.steps``, so the set does not change while the run goes on).
    NB201 has 6,466 distinct cells: a long run trains on nearly all of them, and then
    only the held-out ones are left.
    """
    steps = cfg.steps if steps is None else steps
    excluded = trained_hashes(pool, cfg, steps)
    archs: list[str] = []
    seen: set[str] = set()
    if include_heldout:
        for a in pool.heldout[:n]:
            seen.add(pool.space.hash(a))
            archs.append(a)
    n_heldout = len(archs)
    seen |= excluded | {pool.space.hash(a) for a in pool.heldout}
    rng = np.random.default_rng([seed, 2024])
    tries = 0
    while len(archs) < n and tries < 200 * n:
        tries += 1
        a = pool.space.sample(rng)
        h = pool.space.hash(a)
        if h not in seen:
            seen.add(h)
            archs.append(a)
    return archs, {"run_heldout": n_heldout, "fresh_unseen": len(archs) - n_heldout,
                   "excluded_trained": len(excluded), "replayed_steps": steps}


def dev_half(space, half: str, path: str | os.PathLike | None = None, arch_col: str | None = None,
             acc_col: str | None = None, max_archs: int = 0, seed: int = 0) -> dict[str, float]:
    """One half of a dev set as ``{canonical arch: accuracy}`` in file order.

    ``'tune'``: data rows 0, 2, 4, ... (even row index, counting from the first row after
    the header); ``'report'``: rows 1, 3, 5, ... With ``max_archs``, a fixed subsample
    (``seed``) of the half, kept in file order. A row whose architecture repeats an earlier
    one of the same half is dropped.
    """
    import search_spaces

    if half not in HALVES:
        raise ValueError(f"unknown dev-set half {half!r}; valid: {', '.join(HALVES)}")
    sp = search_spaces.get(space) if isinstance(space, str) else space
    dpath, dcol, dacc = DEV_SETS.get(sp.name, (None, None, None))
    path, arch_col, acc_col = path or dpath, arch_col or dcol, acc_col or dacc
    if path is None:
        raise ValueError(f"no dev set known for space {sp.name!r}; pass its CSV path")
    out: dict[str, float] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i % 2 != HALVES.index(half):
                continue
            arch = sp.validate(row[arch_col])
            out.setdefault(arch, float(row[acc_col]))
    if max_archs and max_archs < len(out):
        keep = set(np.random.default_rng([seed, 301]).choice(len(out), size=max_archs, replace=False))
        out = {a: v for i, (a, v) in enumerate(out.items()) if i in keep}
    return out


class JsonlCache:
    """Append-only ``{key: value}`` store in a JSON-lines file (key: any JSON-able value).

    Lines cut short by a kill, or otherwise unreadable, are skipped (their work is redone).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.values: dict[str, Any] = {}
        if self.path.exists():
            for raw in self.path.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(raw)
                    self.values[rec["k"]] = rec["v"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(parts: Any) -> str:
        return json.dumps(parts, sort_keys=True, separators=(",", ":"))

    def get(self, parts: Any) -> Any:
        return self.values.get(self.key(parts))

    def __contains__(self, parts: Any) -> bool:
        return self.key(parts) in self.values

    def put(self, parts: Any, value: Any) -> None:
        k = self.key(parts)
        self.values[k] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write("\n" + json.dumps({"k": k, "v": value}) + "\n")  # leading newline: after a torn line


def parse_build(text: str) -> dict[str, int]:
    """A network size as the benchmarks' flags write it: ``'C=16,layers=8'`` -> ``{'C': 16, 'layers': 8}``."""
    from ghnas._util import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def write_atomic(path: Path, text: str) -> None:
    """Benchmark result files are written through ghnas's own atomic writer."""
    from ghnas._io import atomic_write_text

    atomic_write_text(path, text)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the architecture where that is not readable):
    timings differ between machines of the same core count."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine() -> str:
    import torch

    return f"{cpu_model()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s)"


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    a = np.asarray(list(values), dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
