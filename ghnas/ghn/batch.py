"""Many graphs as one disjoint union, prepared for a single GHN-2 forward pass.

:class:`GraphBatch` holds everything about a list of :class:`~ghnas.graph.Graph` that
does not depend on the GHN's weights: node types and shape-embedding rows, the
topological generations of the forward and backward sweeps with their incoming edges,
and the plan that maps decoder outputs to named parameter tensors. Building it once
and reusing it (e.g. across meta-training steps) saves the graph preprocessing.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..graph import PRIMITIVE_ID, PRIMITIVES, Graph
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


def hop_edges(n: int, edges, cutoff: int, b: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real and virtual edges ``[src, dst, hops]`` of one graph, in two orders.

    A virtual edge joins every pair at most ``cutoff`` hops apart along the data flow
    that has no real edge; ``hops`` is the directed shortest-path length (as in
    :meth:`ghnas.graph.Graph.hop_edges`). Returns the edges sorted by (src, dst) and
    sorted by (dst, src).
    """
    real = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(real) and np.any(real[:, 0] >= real[:, 1]):
        bad = real[real[:, 0] >= real[:, 1]][0].tolist()
        raise ValueError(f"graph {b}: edge {bad} does not go from a lower to a higher node index; "
                         f"nodes must be in topological order")
    if len(real) and (real.min() < 0 or real.max() >= n):
        raise ValueError(f"graph {b}: edge node index out of range for {n} nodes")
    if cutoff <= 1 or len(real) == 0:
        real = np.unique(real, axis=0)  # sorted by (src, dst)
        e = np.concatenate([real, np.ones((len(real), 1), np.int64)], 1)
        return e, e[np.lexsort((e[:, 0], e[:, 1]))]
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    adj = csr_matrix((np.ones(len(real)), (real[:, 0], real[:, 1])), shape=(n, n))
    dist = shortest_path(adj, method="D", directed=True, unweighted=True)
    idx = np.flatnonzero((dist > 0) & (dist <= cutoff))  # inf (unreachable) fails the second test
    s, d = np.divmod(idx, n)
    e_src = np.stack([s, d, dist.ravel()[idx].astype(np.int64)], 1)
    by_dst = np.argsort(d.astype(np.int16 if n < 32767 else np.int64), kind="stable")
    return e_src, e_src[by_dst]


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

        types: list[int] = []
        shape_rows: list[tuple[int, ...]] = []
        by_src, by_dst = [], []
        plans: dict[tuple, DecodePlan] = {}
        groups: dict[tuple, ParamGroup] = {}
        key_nodes: dict[tuple, list[int]] = {}
        node_info: dict[tuple, tuple] = {}  # per distinct (op, shape, role, #params)

        for b, (g, off) in enumerate(zip(self.graphs, offsets)):
            n = len(g.nodes)
            if n == 0:
                raise ValueError(f"graph {b} has no nodes")
            e_src, e_dst = hop_edges(n, g.edges, self.ve_cutoff, b)
            by_src.append(e_src + np.array([off, off, 0], np.int64))
            by_dst.append(e_dst + np.array([off, off, 0], np.int64))
            warned = False
            names: list[str] = []
            for i, node in enumerate(g.nodes):
                shape = node.shape
                if shape is not None and type(shape) is not tuple:
                    shape = tuple(int(v) for v in shape)
                ck = (node.op, shape, node.role, len(node.params))
                info = node_info.get(ck)
                if info is None:
                    info = node_info[ck] = self._node_info(node, shape, shape_enc, max_shape, b, i)
                type_id, rows, known, key, kinds = info
                types.append(type_id)
                shape_rows.append(rows)
                if not known and not warned and shape_enc.warn_unknown:
                    warn_unknown_shape(shape, shape_enc.describe(rows))  # at most once per graph and shape
                    warned = True
                if key is None:
                    continue
                kn = key_nodes.setdefault(key, [])
                pos = len(kn)
                kn.append(off + i)
                for pname, (row, kind) in zip(node.params, kinds):
                    gk = (key, row, kind, shape)
                    grp = groups.get(gk)
                    if grp is None:
                        grp = groups[gk] = ParamGroup([], row, kind, shape, [])  # type: ignore[arg-type]
                        plans.setdefault(key, DecodePlan(key, None)).groups.append(grp)  # type: ignore[arg-type]
                    grp.pos.append(pos)  # type: ignore[union-attr]
                    grp.targets.append((b, pname))
                    names.append(pname)
            if len(set(names)) != len(names):
                dup = sorted({p for p in names if names.count(p) > 1})
                raise ValueError(f"graph {b}: parameters predicted by more than one node: {dup}")
            self.param_names.append(names)

        dev = torch.device(device)
        self.device = dev
        self.node_types = torch.tensor(types, dtype=torch.long, device=dev)
        self.shape_ind = torch.tensor(shape_rows, dtype=torch.long, device=dev)
        self.graph_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(dev)
        #: all edges ``[src, dst, hops]`` (real: hops = 1), sorted by (src, dst)
        self.edges = np.concatenate(by_src, 0)
        e_dst = np.concatenate(by_dst, 0)
        self.plans = []
        for key, plan in plans.items():
            plan.nodes = torch.tensor(key_nodes[key], dtype=torch.long, device=dev)
            for grp in plan.groups:
                grp.pos = torch.tensor(grp.pos, dtype=torch.long, device=dev)
            self.plans.append(plan)
        real = self.edges[self.edges[:, 2] == 1]
        fwd = topological_levels(self.num_nodes, real[:, 0], real[:, 1])
        bwd = topological_levels(self.num_nodes, real[:, 1], real[:, 0])
        # forward: node dst receives from src (edges sorted by receiver dst); backward: the reverse
        self.sweeps = (self._sweep(fwd, e_dst[:, 1], e_dst[:, 0], e_dst[:, 2]),
                       self._sweep(bwd, self.edges[:, 0], self.edges[:, 1], self.edges[:, 2]))

    @staticmethod
    def _node_info(node, shape, shape_enc: ShapeEncoder, max_shape, b: int, i: int) -> tuple:
        if node.op not in PRIMITIVE_ID:
            raise ValueError(f"graph {b}, node {i} ({node.name!r}): unknown op {node.op!r}; "
                             f"valid ops: {', '.join(PRIMITIVES)}")
        rows, known = shape_enc.shape_index(shape)
        if not node.params:
            return PRIMITIVE_ID[node.op], rows, known, None, ()
        if shape is None:
            raise ValueError(f"graph {b}, node {i} ({node.name!r}) predicts {list(node.params)} but has no shape")
        key = decoder_key(shape, node.role, max_shape)
        if len(shape) == 1:
            # decoder_1d gives two rows: weight, bias. A norm node's bias and a conv bias use row 1.
            kinds = tuple((1, "bias") if (node.op == "bias" or j > 0) else (0, "norm_weight")
                          for j in range(len(node.params)))
        else:
            kinds = tuple((None, "weight") for _ in node.params)
        return PRIMITIVE_ID[node.op], rows, known, key, kinds

    def _sweep(self, depth: np.ndarray, recv: np.ndarray, send: np.ndarray, hops: np.ndarray) -> list[Generation]:
        """Generations of one sweep, each with a sparse matrix that sums its messages.

        ``recv``/``send``/``hops`` list the edges along which messages flow in this sweep,
        sorted by (receiver, sender); the matrices then come out in coalesced order with
        only a stable sort by generation.
        """
        n = len(depth)
        small = np.int16 if depth.max() < np.iinfo(np.int16).max else np.int64
        order = np.argsort(depth.astype(small), kind="stable")
        n_gen = int(depth.max()) + 1
        node_bounds = np.searchsorted(depth[order], np.arange(n_gen + 1))
        pos = np.empty(n, np.int64)  # position of each node within its generation
        pos[order] = np.arange(n) - node_bounds[depth[order]]
        one = hops == 1
        if self.ve_cutoff > 1:
            # message table rows: 2*i = mlp(node i), 2*i+1 = mlp_ve(node i); each real edge
            # reads both, a virtual edge only the second (weighted 1/hops)
            before = np.cumsum(one) - one
            at_ve = np.arange(len(hops)) + before + one
            at_one = (np.arange(len(hops)) + before)[one]
            m = len(hops) + int(one.sum())
            rcv = np.empty(m, np.int64)
            cols = np.empty(m, np.int64)
            vals = np.empty(m, np.float32)
            inv = (1.0 / np.arange(1, int(hops.max()) + 1, dtype=np.float64)).astype(np.float32)
            rcv[at_ve], cols[at_ve], vals[at_ve] = recv, 2 * send + 1, inv[hops - 1]
            rcv[at_one], cols[at_one], vals[at_one] = recv[one], 2 * send[one], 1.0
            width = 2 * n
        else:
            rcv, cols, vals, width = recv[one], send[one], np.ones(int(one.sum()), np.float32), n
        gen = depth[rcv]
        srt = np.argsort(gen.astype(small), kind="stable")
        rcv, cols, vals = rcv[srt], cols[srt], vals[srt]
        # entries are now sorted by (generation, position); row starts of all generations at once
        crow_all = np.searchsorted(node_bounds[gen[srt]] + pos[rcv], np.arange(n + 1))
        has_out = np.zeros(n, bool)
        has_out[send] = True
        dev = self.device
        cols_t = torch.from_numpy(cols)
        values = torch.from_numpy(vals)
        nodes_t = torch.from_numpy(order)
        gens = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            for k in range(n_gen):
                na, nb = node_bounds[k], node_bounds[k + 1]
                crow = crow_all[na:nb + 1]
                a, b = crow[0], crow[-1]
                # CSR: about 10x faster than COO in sparse @ dense on CPU
                adj = torch.sparse_csr_tensor(torch.from_numpy(crow - a), cols_t[a:b], values[a:b],
                                              (int(nb - na), width), check_invariants=False)
                gens.append(Generation(nodes_t[na:nb].to(dev), adj.to(dev),
                                       bool(has_out[order[na:nb]].any())))
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
