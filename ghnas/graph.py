"""Computational graphs of neural networks, as a GHN reads them.

A :class:`Graph` is a DAG whose nodes are operations of a network (parameterised
layers, pooling, sums, concatenations, ...) and whose edges follow the data flow.
Node order is always topological: every edge goes from a lower to a higher index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# GHN-2's primitive vocabulary; the index of a name is its row in the GHN's op embedding.
PRIMITIVES: tuple[str, ...] = (
    "max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse", "sum",
    "concat", "input", "bias", "bn", "ln", "pos_enc", "glob_avg",
)
PRIMITIVE_ID: dict[str, int] = {p: i for i, p in enumerate(PRIMITIVES)}


@dataclass
class Node:
    """One operation of a network.

    Attributes:
        op: primitive type, one of :data:`PRIMITIVES`.
        name: parameter name for parameter nodes (``'layer1.0.conv1.weight'``),
            otherwise a label of the operation (``'input'``, ``'sum'``, ...).
        shape: parameter shape; ``(1, 1, kh, kw)`` for pooling; ``None`` otherwise.
        params: names of the model parameters this node predicts, in order. A norm
            layer's node predicts its weight and then its bias.
        role: ``'classifier_weight'``, ``'classifier_bias'`` or ``''``.
        attrs: extra facts (pooling kernel sizes, ...) for inspection.
    """

    op: str
    name: str
    shape: tuple[int, ...] | None = None
    params: tuple[str, ...] = ()
    role: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def type_id(self) -> int:
        return PRIMITIVE_ID[self.op]


@dataclass
class Graph:
    """A network's computational graph.

    Attributes:
        nodes: nodes in topological order.
        edges: ``(E, 2)`` int64 array of real data-flow edges ``src -> dst`` with ``src < dst``.
    """

    nodes: list[Node]
    edges: np.ndarray

    def __len__(self) -> int:
        return len(self.nodes)

    def hop_edges(self, cutoff: int = 50) -> np.ndarray:
        """Real and virtual edges as an ``(E, 3)`` array ``[src, dst, hops]``.

        ``hops`` is 1 for a real edge and the directed shortest-path length for a
        virtual edge (GHN-2's virtual edges), which exists for every pair at most
        ``cutoff`` hops apart that has no real edge. ``cutoff=1`` gives only real edges.
        """
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import shortest_path

        n = len(self.nodes)
        if cutoff <= 1 or len(self.edges) == 0:
            return np.concatenate([self.edges, np.ones((len(self.edges), 1), np.int64)], 1)
        adj = csr_matrix((np.ones(len(self.edges)), (self.edges[:, 0], self.edges[:, 1])), shape=(n, n))
        dist = shortest_path(adj, method="D", directed=True, unweighted=True)
        src, dst = np.nonzero(np.isfinite(dist) & (dist > 0) & (dist <= cutoff))
        return np.stack([src, dst, dist[src, dst].astype(np.int64)], 1).astype(np.int64)
