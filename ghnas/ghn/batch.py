"""Many graphs as one disjoint union, prepared for a single GHN-2 forward pass.

:class:`GraphBatch` holds everything about a list of :class:`~ghnas.graph.Graph` that
does not depend on the GHN's weights: node types and shape-embedding rows, the
topological generations of the forward and backward sweeps with their incoming edges,
and the plan that maps decoder outputs to named parameter tensors. Building it once
and reusing it (e.g. across meta-training steps) saves the graph preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..graph import PRIMITIVES, Graph
from .layers import Generation, ShapeEncoder, warn_unknown_shape

CLASSIFIER_WEIGHT = "classifier_weight"
CLASSIFIER_BIAS = "classifier_bias"


def decoder_key(shape: Sequence[int], role: str, max_shape: Sequence[int]) -> tuple[int, ...]:
    """The group key under which GHN-2 decodes a parameter node (as in ppuda).

    Channel counts are clipped to ``max_shape`` and coarsened (multiples of 3 become
    multiples of 4; anything at least half the maximum becomes the maximum), so that
    similar shapes share one decoder call. The key fixes which corner of the max-size
    decoder output a node receives.
    """

    def coarse(j: int) -> int:
        n = min(int(shape[j]), int(max_shape[j]))
        if n % 3 == 0:
            n = n // 3 * 4
        if n >= max_shape[j] / 2:
            n = int(max_shape[j])
        return n

    if len(shape) == 1:
        return (coarse(0), -1 if role == CLASSIFIER_BIAS else 0)
    if role == CLASSIFIER_WEIGHT:
        return (coarse(0), coarse(1))
    if len(shape) == 2:
        return (coarse(0), coarse(1), 1, 1)
    if len(shape) == 3:
        return (coarse(0), coarse(1), coarse(2))
    if len(shape) == 4:
        return (coarse(0), coarse(1), int(shape[2]), int(shape[3]))
    raise ValueError(f"GHN-2 cannot predict a parameter of shape {tuple(shape)} (1-4 dimensions only)")


@dataclass
class ParamGroup:
    """Parameters decoded the same way: same decoder key, output row, kind and shape.

    ``pos`` indexes rows of the key's decoder output; ``targets`` names each tensor as
    ``(graph index, parameter name)``. ``kind`` is ``'weight'``, ``'norm_weight'`` or
    ``'bias'`` and selects the normalisation.
    """

    pos: torch.Tensor
    row: int | None
    kind: str
    shape: tuple[int, ...]
    targets: list[tuple[int, str]]


@dataclass
class DecodePlan:
    key: tuple[int, ...]
    nodes: torch.Tensor  # global node indices decoded with this key
    groups: list[ParamGroup] = field(default_factory=list)


def topological_levels(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Longest-path depth of every node of a DAG (0 for nodes without predecessors).

    Kahn's algorithm one level at a time: the nodes whose predecessors are all placed
    form the next level. Works on disjoint unions of graphs as well.
    """
    depth = np.zeros(n, np.int64)
    if len(src) == 0:
        return depth
    order = np.argsort(src, kind="stable")
    succ = dst[order]
    start = np.searchsorted(src[order], np.arange(n + 1))
    indeg = np.bincount(dst, minlength=n)
    frontier = np.flatnonzero(indeg == 0)
    level, placed = 0, 0
    while len(frontier):
        depth[frontier] = level
        placed += len(frontier)
        lo, hi = start[frontier], start[frontier + 1]
        cnt = hi - lo
        if cnt.sum() == 0:
            break
        # successors of the whole frontier, gathered without a Python loop
        idx = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(cnt.sum())
        targets = succ[idx]
        np.subtract.at(indeg, targets, 1)
        cand = np.unique(targets)
        frontier = cand[indeg[cand] == 0]
        level += 1
    if placed != n:
        raise ValueError("the graph has a cycle; GHN-2 graphs must be DAGs")
    return depth


class GraphBatch:
    """A disjoint union of graphs, preprocessed for :class:`~ghnas.ghn.GHN2`.

    Args:
        graphs: the graphs (node order must be topological: every edge src < dst).
        shape_enc: the GHN's shape encoder (gives the embedding rows of shapes).
        max_shape: the GHN's maximum decoded shape, for the decoder keys.
        ve_cutoff: virtual edges join nodes up to this many hops apart (1: none).
        device: where the index tensors live.

    Example:
        >>> import ghnas, numpy as np
        >>> from ghnas.graph import Graph, Node
        >>> g = Graph([Node('input', 'input'), Node('conv', 'w', (8, 3, 3, 3), ('w',)),
        ...            Node('conv', 'fc.weight', (10, 8), ('fc.weight',), 'classifier_weight')],
        ...           np.array([[0, 1], [1, 2]]))
        >>> ghn = ghnas.GHN2(hid=8, max_shape=(16, 16, 11, 11))
        >>> batch = ghn.prepare([g, g])
        >>> batch.num_graphs, batch.num_nodes
        (2, 6)
    """

    def __init__(self, graphs: Sequence[Graph], shape_enc: ShapeEncoder, max_shape: Sequence[int],
                 ve_cutoff: int, device: torch.device | str = "cpu"):
        if len(graphs) == 0:
            raise ValueError("GraphBatch needs at least one graph")
        self.graphs = list(graphs)
        self.ve_cutoff = int(ve_cutoff)
        sizes = [len(g.nodes) for g in self.graphs]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.num_nodes = int(sum(sizes))
        self.node_offsets = offsets
        self.param_names: list[list[str]] = []

        types, shape_rows, graph_ind = [], [], []
        all_e = []
        plans: dict[tuple, DecodePlan] = {}
        group_index: dict[tuple, ParamGroup] = {}
        key_nodes: dict[tuple, list[int]] = {}

        for b, (g, off) in enumerate(zip(self.graphs, offsets)):
            n = len(g.nodes)
            if n == 0:
                raise ValueError(f"graph {b} has no nodes")
            real = np.asarray(g.edges, dtype=np.int64).reshape(-1, 2)
            if len(real) and np.any(real[:, 0] >= real[:, 1]):
                bad = real[real[:, 0] >= real[:, 1]][0].tolist()
                raise ValueError(f"graph {b}: edge {bad} does not go from a lower to a higher node "
                                 f"index; nodes must be in topological order")
            if len(real) and (real.min() < 0 or real.max() >= n):
                raise ValueError(f"graph {b}: edge node index out of range for {n} nodes")
            e = g.hop_edges(self.ve_cutoff) if self.ve_cutoff > 1 else np.concatenate(
                [real, np.ones((len(real), 1), np.int64)], 1)
            all_e.append(e + np.array([off, off, 0], np.int64))
            warned = False
            names: list[str] = []
            for i, node in enumerate(g.nodes):
                if node.op not in PRIMITIVES:
                    raise ValueError(f"graph {b}, node {i} ({node.name!r}): unknown op {node.op!r}; "
                                     f"valid ops: {', '.join(PRIMITIVES)}")
                types.append(PRIMITIVES.index(node.op))
                ind, known = shape_enc.shape_index(node.shape)
                if not known and not warned:
                    warn_unknown_shape(node.name, node.shape, shape_enc.describe(ind))
                    warned = True
                shape_rows.append(ind)
                graph_ind.append(b)
                if not node.params:
                    continue
                if node.shape is None:
                    raise ValueError(f"graph {b}, node {i} ({node.name!r}) predicts {list(node.params)} "
                                     f"but has no shape")
                shape = tuple(int(s) for s in node.shape)
                key = decoder_key(shape, node.role, max_shape)
                gi = off + i
                kn = key_nodes.setdefault(key, [])
                pos = len(kn)
                kn.append(gi)
                for j, pname in enumerate(node.params):
                    if len(shape) == 1:
                        is_bias = node.op == "bias" or j > 0
                        row, kind = (1, "bias") if is_bias else (0, "norm_weight")
                    else:
                        row, kind = None, "weight"
                    gk = (key, row, kind, shape)
                    if gk not in group_index:
                        group_index[gk] = ParamGroup([], row, kind, shape, [])  # type: ignore[arg-type]
                        plans.setdefault(key, DecodePlan(key, None)).groups.append(group_index[gk])  # type: ignore[arg-type]
                    group_index[gk].pos.append(pos)  # type: ignore[union-attr]
                    group_index[gk].targets.append((b, pname))
                    names.append(pname)
            if len(set(names)) != len(names):
                dup = sorted({p for p in names if names.count(p) > 1})
                raise ValueError(f"graph {b}: parameters predicted by more than one node: {dup}")
            self.param_names.append(names)

        dev = torch.device(device)
        self.device = dev
        self.node_types = torch.tensor(types, dtype=torch.long, device=dev)
        self.shape_ind = torch.tensor(shape_rows, dtype=torch.long, device=dev)
        self.graph_index = torch.tensor(graph_ind, dtype=torch.long, device=dev)
        self.edges = np.concatenate(all_e, 0) if all_e else np.zeros((0, 3), np.int64)
        self.plans = []
        for key, plan in plans.items():
            plan.nodes = torch.tensor(key_nodes[key], dtype=torch.long, device=dev)
            for grp in plan.groups:
                grp.pos = torch.tensor(grp.pos, dtype=torch.long, device=dev)
            self.plans.append(plan)
        real = self.edges[self.edges[:, 2] == 1]
        fwd = topological_levels(self.num_nodes, real[:, 0], real[:, 1])
        bwd = topological_levels(self.num_nodes, real[:, 1], real[:, 0])
        self.sweeps = (self._sweep(fwd, forward=True), self._sweep(bwd, forward=False))

    def _sweep(self, depth: np.ndarray, forward: bool) -> list[Generation]:
        """Generations of one sweep, each with a sparse matrix that sums its messages."""
        e = self.edges
        n = len(depth)
        # in the forward sweep messages flow src -> dst, in the backward sweep dst -> src
        recv, send = (e[:, 1], e[:, 0]) if forward else (e[:, 0], e[:, 1])
        hops = e[:, 2]
        order = np.argsort(depth, kind="stable")
        n_gen = int(depth.max()) + 1
        node_bounds = np.searchsorted(depth[order], np.arange(n_gen + 1))
        pos = np.empty(n, np.int64)  # position of each node within its generation
        pos[order] = np.arange(n) - node_bounds[depth[order]]
        one = hops == 1
        if self.ve_cutoff > 1:  # message table rows: 2*i = mlp(node i), 2*i+1 = mlp_ve(node i)
            rcv = np.concatenate([recv[one], recv])
            cols = np.concatenate([2 * send[one], 2 * send + 1])
            vals = np.concatenate([np.ones(int(one.sum())), 1.0 / hops]).astype(np.float32)
            width = 2 * n
        else:
            rcv, cols, vals, width = recv[one], send[one], np.ones(int(one.sum()), np.float32), n
        gen, rows = depth[rcv], pos[rcv]
        # coalesced (row-major) order within each generation, by one integer sort key
        srt = np.argsort((gen * (n + 1) + rows) * width + cols)
        gen, rows, cols, vals = gen[srt], rows[srt], cols[srt], vals[srt]
        bounds = np.searchsorted(gen, np.arange(n_gen + 1))
        has_out = np.zeros(n, bool)
        has_out[send] = True
        dev = self.device
        index = torch.from_numpy(np.stack([rows, cols]))
        values = torch.from_numpy(vals)
        nodes_t = torch.from_numpy(order)
        gens = []
        for k in range(n_gen):
            a, b = bounds[k], bounds[k + 1]
            na, nb = node_bounds[k], node_bounds[k + 1]
            adj = torch.sparse_coo_tensor(index[:, a:b], values[a:b], (int(nb - na), width),
                                          is_coalesced=True, check_invariants=False)
            gens.append(Generation(nodes_t[na:nb].to(dev), adj.to(dev), bool(has_out[order[na:nb]].any())))
        return gens

    @property
    def num_graphs(self) -> int:
        return len(self.graphs)

    def to(self, device: torch.device | str) -> "GraphBatch":
        """Move the index tensors to ``device`` (in place); returns self."""
        dev = torch.device(device)
        if dev == self.device:
            return self
        self.node_types = self.node_types.to(dev)
        self.shape_ind = self.shape_ind.to(dev)
        self.graph_index = self.graph_index.to(dev)
        for plan in self.plans:
            plan.nodes = plan.nodes.to(dev)
            for grp in plan.groups:
                grp.pos = grp.pos.to(dev)
        self.sweeps = tuple([g.to(dev) for g in sweep] for sweep in self.sweeps)
        self.device = dev
        return self
