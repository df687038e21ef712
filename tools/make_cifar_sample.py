"""Build ghnas/assets/cifar10_test_sample.npz, the offline CIFAR-10 sample shipped with ghnas.

The sample is a class-balanced, seeded draw of CIFAR-10 *test* images from an ImageFolder
copy of CIFAR-10 (by default the project's ``../shared/data/cifar10/test``). The JPEG files
are stored byte for byte, concatenated into one uint8 array; ``np.savez_compressed`` then
squeezes out the JPEG headers, which are identical from file to file, so 1,000 images take
about 0.3 MB. The result must stay under 1 MB (the project's hard limit): the script takes
the largest per-class count (at most ``--per-class``) whose file fits under ``--max-bytes``.

Arrays in the .npz (no pickles; ``np.load(..., allow_pickle=False)`` reads it):
  jpeg     uint8 (total_bytes,)  all JPEG files, back to back
  offsets  int64 (N + 1,)        image i is jpeg[offsets[i]:offsets[i + 1]]
  labels   int64 (N,)            class index into ``classes``
  classes  str   (10,)           CIFAR-10 class names in the usual order
  files    str   (N,)            source path relative to the test folder, e.g. 'cat/0042.jpg'
  seed     int64 ()              the seed used for the draw

Usage (from the repository root)::

    python tools/make_cifar_sample.py                     # 100 per class, seed 0
    python tools/make_cifar_sample.py --per-class 50 --out /tmp/sample.npz
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cifar10" / "test"
DEFAULT_OUT = REPO / "ghnas" / "assets" / "cifar10_test_sample.npz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def choose_files(source: Path, per_class: int, seed: int) -> list[tuple[str, int]]:
    """Return ``(relative path, label)`` pairs: ``per_class`` seeded picks from each class."""
    rng = np.random.default_rng(seed)
    picked = []
    for label, cls in enumerate(CIFAR10_CLASSES):
        folder = source / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {folder} is missing; --source must be a CIFAR-10 "
                                    f"ImageFolder split with folders {', '.join(CIFAR10_CLASSES)}")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg")))
        if len(names) < per_class:
            raise ValueError(f"{folder} has {len(names)} JPEGs, fewer than --per-class {per_class}")
        chosen = np.sort(rng.choice(len(names), size=per_class, replace=False))
        picked += [(f"{cls}/{names[i]}", label) for i in chosen]
    return picked


def pack(source: Path, picked: list[tuple[str, int]], seed: int) -> bytes:
    """Serialise the chosen files into the compressed .npz format described above."""
    blobs = [(source / rel).read_bytes() for rel, _ in picked]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=offsets,
        labels=np.array([lab for _, lab in picked], dtype=np.int64),
        classes=np.array(CIFAR10_CLASSES),
        files=np.array([rel for rel, _ in picked]),
        seed=np.array(seed, dtype=np.int64),
    )
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="CIFAR-10 test split as an ImageFolder tree (default: ../shared/data/cifar10/test)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--per-class", type=int, default=100, help="upper bound on images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-bytes", type=int, default=950_000, help="largest allowed file size")
    args = ap.parse_args(argv)

    per_class = args.per_class
    while per_class > 0:
        picked = choose_files(args.source, per_class, args.seed)
        data = pack(args.source, picked, args.seed)
        if len(data) <= args.max_bytes:
            break
        print(f"{per_class} per class -> {len(data):,} bytes, over {args.max_bytes:,}; trying fewer")
        per_class -= 5
    else:
        print("no per-class count fits under --max-bytes", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)
    raw = sum((args.source / rel).stat().st_size for rel, _ in picked)
    print(f"wrote {args.out}: {len(picked)} images ({per_class} per class, seed {args.seed}), "
          f"{len(data):,} bytes (JPEG files total {raw:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
