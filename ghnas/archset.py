"""Architecture datasets in HDF5, in the spirit of DeepNets-1M.

One file holds N architectures of one search space, split into ``train`` / ``val`` /
``test`` groups, each with the architecture strings, their computational graphs and
simple properties (parameter count, FLOPs). Meta-training reads ``train``; evaluation
reads ``val`` and ``test``, which are disjoint from ``train`` by canonical hash, so a
held-out architecture is never trained on.

Layout of a file::

    attrs: format='ghnas-archset', version=1, space, seed, build_kwargs (JSON)
    /<split>/arch          (n,) variable-length UTF-8 strings
    /<split>/params        (n,) int64
    /<split>/flops         (n,) int64
    /<split>/graph_offsets (n+1,) int64  node range of architecture i
    /<split>/edge_offsets  (n+1,) int64
    /<split>/node_op       (total_nodes,) int8   index into ghnas.graph.PRIMITIVES
    /<split>/node_shape    (total_nodes, 4) int32  parameter shape padded with -1
    /<split>/node_meta     (total_nodes,) JSON strings: name, params, role
    /<split>/edges         (total_edges, 2) int32  real edges, local node indices

Example:
    >>> from ghnas.archset import write_archset, ArchSet
    >>> write_archset("nb201.h5", space="nb201", n_train=20, n_val=5, n_test=5,
    ...               build_kwargs={"C": 8, "N": 1}, progress=False)
    >>> ds = ArchSet("nb201.h5")
    >>> len(ds["train"]), ds["val"].arch[0].startswith("|")
    (20, True)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ghnas.graph import PRIMITIVES, Graph, Node

FORMAT = "ghnas-archset"
VERSION = 1
SPLITS = ("train", "val", "test")


def count_flops(model, input_shape: Sequence[int] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of the convolutions and linear layers of one forward pass on
    one input of ``input_shape`` (batch dimension included), biases and element-wise ops
    not counted, as NAS benchmarks count: :func:`ghnas.proxies.size.count_flops` with
    ``elementwise=False, bias=False``."""
    from ghnas.proxies.size import count_flops as _count

    return _count(model, tuple(input_shape)[1:], elementwise=False, bias=False)


@dataclass
class ArchSplit:
    """The architectures of one split, read fully into memory (they are small)."""

    arch: list[str]
    params: np.ndarray
    flops: np.ndarray
    graphs: list[Graph] = field(repr=False)

    def __len__(self) -> int:
        return len(self.arch)


class ArchSet:
    """Read-only view of an architecture dataset written by :func:`write_archset`."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"architecture dataset {self.path} does not exist; "
                                    "make one with ghnas.archset.write_archset(...)")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{self.path} is not a readable HDF5 file: {e}") from e
        with f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{self.path} is not a ghnas architecture dataset "
                                 f"(format attribute {f.attrs.get('format')!r}, expected {FORMAT!r})")
            self.space: str = str(f.attrs["space"])
            self.seed: int = int(f.attrs["seed"])
            self.build_kwargs: dict = json.loads(f.attrs["build_kwargs"])
            self.splits: dict[str, ArchSplit] = {s: _read_split(f[s]) for s in SPLITS if s in f}

    def __getitem__(self, split: str) -> ArchSplit:
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in {self.path}; splits: {sorted(self.splits)}")
        return self.splits[split]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"ArchSet({str(self.path)!r}, space={self.space!r}, {sizes})"


def _read_split(g) -> ArchSplit:
    arch = [a.decode() if isinstance(a, bytes) else str(a) for a in g["arch"][()]]
    goff, eoff = g["graph_offsets"][()], g["edge_offsets"][()]
    ops, shapes, edges = g["node_op"][()], g["node_shape"][()], g["edges"][()]
    meta = [json.loads(m) for m in g["node_meta"].asstr()[()]]
    graphs = []
    for i in range(len(arch)):
        nodes = []
        for k in range(goff[i], goff[i + 1]):
            shape = tuple(int(s) for s in shapes[k] if s >= 0)
            nodes.append(Node(op=PRIMITIVES[ops[k]], name=meta[k]["name"], shape=shape or None,
                              params=tuple(meta[k]["params"]), role=meta[k]["role"]))
        graphs.append(Graph(nodes=nodes, edges=edges[eoff[i]:eoff[i + 1]].astype(np.int64)))
    return ArchSplit(arch=arch, params=g["params"][()], flops=g["flops"][()], graphs=graphs)


def _write_split(f, name: str, archs: list[str], graphs: list[Graph], params: list[int],
                 flops: list[int]) -> None:
    import h5py

    g = f.create_group(name)
    g.create_dataset("arch", data=np.array(archs, dtype=object), dtype=h5py.string_dtype())
    g.create_dataset("params", data=np.asarray(params, np.int64))
    g.create_dataset("flops", data=np.asarray(flops, np.int64))
    g.create_dataset("graph_offsets", data=np.cumsum([0] + [len(gr.nodes) for gr in graphs]))
    g.create_dataset("edge_offsets", data=np.cumsum([0] + [len(gr.edges) for gr in graphs]))
    nodes = [n for gr in graphs for n in gr.nodes]
    g.create_dataset("node_op", data=np.array([n.type_id for n in nodes], np.int8))
    shapes = np.full((len(nodes), 4), -1, np.int32)
    for k, n in enumerate(nodes):
        if n.shape is not None:
            if len(n.shape) > 4:
                raise ValueError(f"node {n.name!r} has a {len(n.shape)}-d shape; at most 4-d is stored")
            shapes[k, :len(n.shape)] = n.shape
    g.create_dataset("node_shape", data=shapes)
    meta = [json.dumps({"name": n.name, "params": list(n.params), "role": n.role}) for n in nodes]
    g.create_dataset("node_meta", data=np.array(meta, dtype=object), dtype=h5py.string_dtype())
    all_edges = [gr.edges for gr in graphs if len(gr.edges)]
    g.create_dataset("edges", data=(np.concatenate(all_edges) if all_edges
                                    else np.zeros((0, 2))).astype(np.int32))


def write_archset(path: str | os.PathLike, space: str = "nb201", n_train: int = 1000,
                  n_val: int = 100, n_test: int = 100, seed: int = 0,
                  build_kwargs: dict[str, Any] | None = None, input_shape=(1, 3, 32, 32),
                  progress: bool = True) -> Path:
    """Sample architectures of ``space``, extract their graphs and write an HDF5 file.

    All splits are drawn together without duplicates (by the space's canonical hash),
    so ``val`` and ``test`` never share an architecture with ``train``. The file is
    written to a temporary name and renamed, so an interrupted call leaves no partial file.

    Args:
        path: output ``.h5`` file.
        space: registered search space name.
        n_train, n_val, n_test: architectures per split.
        seed: sampling seed; the same seed gives the same file contents.
        build_kwargs: passed to ``space.build`` (network size, e.g. ``{"C": 16, "N": 5}``).
        input_shape: input used to trace graphs and count FLOPs.
        progress: show a progress bar.
    """
    import h5py
    import torch
    from tqdm.auto import tqdm

    import search_spaces
    from ghnas.graph import extract

    build_kwargs = dict(build_kwargs or {})
    sp = search_spaces.get(space)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    # held-out splits first, so their membership does not depend on n_train
    archs = sp.sample_many(n_val + n_test + n_train, seed=seed, unique=True)
    parts = {"val": archs[:n_val], "test": archs[n_val:n_val + n_test],
             "train": archs[n_val + n_test:]}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    bar = tqdm(total=len(archs), desc=f"archset {space}", disable=not progress)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, version=VERSION, space=sp.name, seed=seed,
                           build_kwargs=json.dumps(build_kwargs))
            for split in SPLITS:
                graphs, params, flops = [], [], []
                for a in parts[split]:
                    torch.manual_seed(0)
                    model = sp.build(a, **build_kwargs)
                    graphs.append(extract(model, input_shape=tuple(input_shape)))
                    params.append(sum(p.numel() for p in model.parameters()))
                    flops.append(count_flops(model, input_shape))
                    bar.update()
                _write_split(f, split, parts[split], graphs, params, flops)
        os.replace(tmp, path)
    finally:
        bar.close()
        if tmp.exists():
            tmp.unlink()
    return path
