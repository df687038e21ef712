"""Meta-train the GHNs that ship with ghnas, and install them as package data.

The exact configurations of the shipped GHNs live here. A run is resumable: run the
same command again after an interruption and it continues from its last checkpoint.

    python benchmarks/train_shipped_ghns.py --space nb201 --data-root ../shared/data/cifar10
    python benchmarks/train_shipped_ghns.py --space darts --data-root ../shared/data/cifar10
    python benchmarks/train_shipped_ghns.py --space nb201 --install   # copy into ghnas/assets

Training uses CIFAR-10's training images (minus a 5,000-image validation split, on which
the learning curve is measured, with held-out architectures). Test images are never used
here.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ghnas.metatrain import MetaTrainConfig, meta_train  # noqa: E402
from ghnas.search import PROXY_BUILD_KWARGS  # noqa: E402

# GHN-2's recipe (meta-batch 8, Adam 1e-3, wd 1e-5, clip 5, image batch 64, lr drops late),
# with networks at the CPU proxy size of each space and far fewer steps than GHN-2's
# ~5 GPU-days: this is what a 2-core CPU allows.
CONFIGS = {
    "nb201": dict(space="nb201", steps=800, eval_every=100, eval_archs=20, eval_images=500),
    # DARTS networks are ~10x slower than NB201 ones on CPU: half the meta-batch, fewer steps
    "darts": dict(space="darts", steps=200, meta_batch=4, eval_every=100, eval_archs=10,
                  eval_images=200),
}


def config_for(space: str, data_root: str | None, device: str) -> MetaTrainConfig:
    return MetaTrainConfig(data="cifar10", data_root=data_root, device=device,
                           build_kwargs=dict(PROXY_BUILD_KWARGS[space]), **CONFIGS[space])


def install(space: str, run_dir: Path, command: str) -> Path:
    """Copy the run's best GHN into ghnas/assets with a sidecar JSON describing it."""
    name = f"ghnas-{space}-cifar10"
    hist = json.loads((run_dir / "history.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    dst = REPO / "ghnas" / "assets" / f"{name}.pt"
    shutil.copyfile(run_dir / "ghn_best.pt", dst)
    best = max(hist["evals"], key=lambda e: e["acc_mean"])
    meta = {"name": name, "space": space, "build_kwargs": cfg["build_kwargs"], "config": cfg,
            "command": command, "steps_trained": hist["history"][-1]["step"],
            "best_eval": best, "evals": hist["evals"]}
    (dst.with_suffix(".json")).write_text(json.dumps(meta, indent=1) + "\n")
    return dst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--data-root", default=None, help="CIFAR-10 root (ImageFolder tree or torchvision files)")
    ap.add_argument("--out", default=None, help="run folder (default runs/ghn-<space>)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--install", action="store_true", help="copy the finished run into ghnas/assets")
    args = ap.parse_args(argv)
    out = Path(args.out or REPO / "runs" / f"ghn-{args.space}")
    if args.install:
        cmd = f"python benchmarks/train_shipped_ghns.py --space {args.space} --data-root <CIFAR-10>"
        print(install(args.space, out, cmd))
        return
    cfg = config_for(args.space, args.data_root, args.device)
    res = meta_train(out, cfg, resume=(out / "state.pt").exists())
    print(json.dumps(res.evals[-1] if res.evals else {}, indent=1))


if __name__ == "__main__":
    main()
