"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020).

An architecture is one cell: a DAG over 4 nodes (node 0 = the cell input, node 3 = the
output). Each node ``i >= 1`` sums one op applied to every earlier node ``j < i``, so
there are 6 edges and 5 ops per edge (15,625 cells). The string format is the
benchmark's::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

node 1 | node 2 | node 3 separated by ``+``; ``op~j`` is the edge from node ``j``.
Parsing accepts surrounding whitespace and edges of a node in any order; the canonical
string lists them by input node. Strings longer than
:data:`~search_spaces.base.MAX_ARCH_LENGTH` characters are refused before parsing, and
error messages quote at most a short prefix of the input.

Structured form (``parse``/``format``): a tuple of 3 nodes, each a tuple of
``(op, j)`` pairs sorted by ``j``, as in the benchmark's own ``Structure.nodes``.

Encoding: 6 ints, one per edge in the order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1),
(3<-2), each an index into :data:`OPS` (5 choices).

Equivalence (``canonical`` / ``hash``; 8,765 classes over the 15,625 cells):
  1. an edge that lies on no path from node 0 to node 3 made of non-``none`` edges cannot
     change the output, so it is replaced by ``none``;
  2. when the edge 1->2 is ``none``, nodes 1 and 2 are interchangeable, so the
     lexicographically smaller of the two labellings is kept.
  Caveat for (1): a conv edge whose input node is identically zero still adds its BN
  bias; the benchmark literature ignores this and so do we.
  The benchmark's own isomorphism classes (6,466 "unique" cells; ``skip_connect`` counts
  as the identity, so e.g. a conv after a skip equals the conv alone) are
  ``hash(arch, equivalence='benchmark')``, see :meth:`NB201Space.benchmark_key`.

Network (:func:`build_network`), as the benchmark's ``TinyNetwork`` (AutoDL-Projects):
stem Conv3x3(3, C, no bias) + BN; three stages of ``N`` cells with C, 2C, 4C channels,
separated by ResNet basic blocks with stride 2 (ReLU-Conv3x3-BN twice; shortcut
AvgPool2d(2) + Conv1x1 without BN); then BN + ReLU, global average pooling and a
linear classifier. Cell ops: ``nor_conv_kxk`` = ReLU-Conv(no bias)-BN, ``avg_pool_3x3``
with ``count_include_pad=False``, ``skip_connect`` = identity. All BN layers are affine
and track running statistics. Module and parameter names follow ``TinyNetwork`` (``stem``,
``cells.{i}.layers.{e}.op.1.weight``, ``cells.{i}.conv_a``, ``lastact``, ``classifier``)
so benchmark checkpoints load by name. Differences from the reference, both on purpose:
``forward`` returns the logits only (the reference returns ``(features, logits)``), and
``none`` edges are skipped instead of adding ``x * 0`` (same values, but no fake data
flow in traced graphs); a node whose inputs are all ``none`` is a zero tensor.

Example:
    >>> from search_spaces.nb201 import NB201Space
    >>> space = NB201Space()
    >>> arch = space.validate('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|'
    ...                       '+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|')
    >>> space.encode(arch).tolist()
    [3, 3, 4, 1, 3, 1]
    >>> sum(p.numel() for p in space.build(arch).parameters())
    802426
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .base import InvalidArchitecture, RNGLike, SearchSpace, as_rng, check_arch_text, short_repr
from .ops import AvgPool, ReLUConvBN

__all__ = ["OPS", "EDGES", "NB201Space", "build_network", "TinyNetwork", "InferCell",
           "ResNetBasicBlock", "ReLUConvBN"]

#: op names in the benchmark's order (the index used by ``encode``)
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to_node, from_node) of each edge, in string / encoding order
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_NODES = 4
#: values of ``NB201Space.hash(arch, equivalence=...)``
EQUIVALENCES: tuple[str, ...] = ("default", "benchmark")
_ZERO = "#"  # the zero term of NB201Space.benchmark_key

Structure = tuple[tuple[tuple[str, int], ...], ...]


def _ops_to_structure(ops: Sequence[str]) -> Structure:
    it = iter(ops)
    return tuple(tuple((next(it), j) for j in range(i)) for i in range(1, N_NODES))


def _structure_to_ops(struct: Structure) -> tuple[str, ...]:
    return tuple(op for node in struct for op, _ in node)


class NB201Space(SearchSpace):
    """NAS-Bench-201 cells as strings; see the module docstring for every convention."""

    name = "nb201"
    ops = OPS
    edges = EDGES

    # ----------------------------------------------------------------- strings
    def parse(self, arch: str) -> Structure:
        text = check_arch_text(arch, "NAS-Bench-201").strip()
        hint = ("expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops "
                f"{', '.join(OPS)}")
        if not text.startswith("|") or not text.endswith("|"):
            raise InvalidArchitecture(
                f"NAS-Bench-201 string must start and end with '|': {short_repr(arch)}; {hint}")
        node_texts = text.split("+")
        if len(node_texts) != N_NODES - 1:
            raise InvalidArchitecture(
                f"NAS-Bench-201 string has {len(node_texts)} node(s) separated by '+', "
                f"needs {N_NODES - 1}: {short_repr(arch)}; {hint}")
        nodes = []
        for i, node_text in enumerate(node_texts, start=1):
            node_text = node_text.strip()
            if len(node_text) < 2 or not (node_text.startswith("|") and node_text.endswith("|")):
                raise InvalidArchitecture(f"node {i} {short_repr(node_text)} must look like '|op~j|...|'; {hint}")
            by_input: dict[int, str] = {}
            for edge_text in node_text[1:-1].split("|"):
                edge_text = edge_text.strip()
                op, sep, j_text = edge_text.partition("~")
                op, j_text = op.strip(), j_text.strip()
                if not sep:
                    raise InvalidArchitecture(f"edge {short_repr(edge_text)} of node {i} must be 'op~j'; {hint}")
                if op not in OPS:
                    raise InvalidArchitecture(
                        f"unknown op {short_repr(op)} in node {i} of {short_repr(arch)}; valid ops: {', '.join(OPS)}")
                # ASCII digits only: str.isdigit() also accepts '²' or '١', which int() refuses
                j = int(j_text) if j_text.isascii() and j_text.isdigit() and len(j_text) <= 3 else None
                if j is None or j >= i:
                    raise InvalidArchitecture(
                        f"bad input node {short_repr(j_text)} in edge {short_repr(edge_text)} of node {i}; "
                        f"node {i} takes inputs from nodes {', '.join(map(str, range(i)))}")
                if j in by_input:
                    raise InvalidArchitecture(f"node {i} has two edges from node {j}; each input appears once")
                by_input[j] = op
            missing = [j for j in range(i) if j not in by_input]
            if missing:
                raise InvalidArchitecture(
                    f"node {i} has no edge from node(s) {', '.join(map(str, missing))}; "
                    f"node {i} needs one edge from each of nodes {', '.join(map(str, range(i)))}")
            nodes.append(tuple((by_input[j], j) for j in range(i)))
        return tuple(nodes)

    def format(self, obj: Any) -> str:
        """Write a structure (or a flat sequence of 6 op names in edge order) as a string."""
        ops = self._ops_of(obj)
        struct = _ops_to_structure(ops)
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in struct)

    def _ops_of(self, obj: Any) -> tuple[str, ...]:
        if isinstance(obj, str):
            return _structure_to_ops(self.parse(obj))
        try:
            items = list(obj)
        except TypeError:
            raise InvalidArchitecture(f"cannot format {short_repr(obj)} as a NAS-Bench-201 cell") from None
        if len(items) == len(EDGES) and all(isinstance(x, str) for x in items):
            ops = tuple(items)
        else:
            if len(items) != N_NODES - 1:
                raise InvalidArchitecture(
                    f"a NAS-Bench-201 structure has {N_NODES - 1} nodes (or give 6 op names), got {len(items)}")
            ops_list = []
            for i, node in enumerate(items, start=1):
                try:
                    node = sorted(((str(op), int(j)) for op, j in node), key=lambda e: e[1])
                except (TypeError, ValueError):
                    raise InvalidArchitecture(
                        f"node {i} must be a sequence of (op, input) pairs, got {short_repr(node)}") from None
                if [j for _, j in node] != list(range(i)):
                    raise InvalidArchitecture(
                        f"node {i} must have one edge from each of nodes {list(range(i))}, got {short_repr(node)}")
                ops_list.extend(op for op, _ in node)
            ops = tuple(ops_list)
        for op in ops:
            if op not in OPS:
                raise InvalidArchitecture(f"unknown op {short_repr(op)}; valid ops: {', '.join(OPS)}")
        return ops

    # ----------------------------------------------------------------- random moves
    def sample(self, rng: RNGLike = None) -> str:
        g = as_rng(rng)
        return self.format([OPS[int(i)] for i in g.integers(len(OPS), size=len(EDGES))])

    def neighbours(self, arch: str) -> list[str]:
        ops = list(self._ops_of(arch))
        out = []
        for e in range(len(EDGES)):
            for op in OPS:
                if op != ops[e]:
                    out.append(self.format(ops[:e] + [op] + ops[e + 1:]))
        return out

    def enumerate(self) -> Iterator[str]:
        """All 15,625 cells, in lexicographic order of their encodings."""
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            yield self.format(ops)

    def __len__(self) -> int:
        return len(OPS) ** len(EDGES)

    # ----------------------------------------------------------------- identity
    def canonical(self, arch: str) -> str:
        """The representative of ``arch`` under ghnas' equivalence (module docstring:
        dead edges become ``none``, nodes 1 and 2 swap when unlinked): 8,765 classes."""
        ops = list(self._ops_of(arch))
        live = [op != "none" for op in ops]
        edge_index = {e: k for k, e in enumerate(EDGES)}
        # nodes reachable from the input, and nodes that reach the output, over live edges
        fwd = [True] + [False] * (N_NODES - 1)
        for i in range(1, N_NODES):
            fwd[i] = any(fwd[j] and live[edge_index[(i, j)]] for j in range(i))
        bwd = [False] * (N_NODES - 1) + [True]
        for j in range(N_NODES - 2, -1, -1):
            bwd[j] = any(bwd[i] and live[edge_index[(i, j)]] for i in range(j + 1, N_NODES))
        for k, (i, j) in enumerate(EDGES):
            if not (live[k] and fwd[j] and bwd[i]):
                ops[k] = "none"
        if ops[edge_index[(2, 1)]] == "none":
            swapped = list(ops)
            for a, b in (((1, 0), (2, 0)), ((3, 1), (3, 2))):
                swapped[edge_index[a]], swapped[edge_index[b]] = ops[edge_index[b]], ops[edge_index[a]]
            key = lambda o: [OPS.index(x) for x in o]  # noqa: E731
            ops = min(ops, swapped, key=key)
        return self.format(ops)

    def hash(self, arch: str, equivalence: str = "default") -> str:
        """Hex digest equal for equivalent architectures.

        Args:
            arch: a NAS-Bench-201 string.
            equivalence: ``'default'``: ghnas' own (:meth:`canonical`, 8,765 classes
                over the 15,625 cells), used everywhere in ghnas for de-duplication;
                ``'benchmark'``: the benchmark's isomorphism classes
                (:meth:`benchmark_key`, 6,466 classes).
        """
        if equivalence == "default":
            return super().hash(arch)
        if equivalence == "benchmark":
            return hashlib.sha256(f"{self.name}-benchmark:{self.benchmark_key(arch)}".encode()).hexdigest()[:32]
        raise ValueError(f"unknown equivalence {equivalence!r}; valid: {', '.join(EQUIVALENCES)}")

    def benchmark_key(self, arch: str) -> str:
        """NAS-Bench-201's own identity of a cell: the key of its unique architectures.

        The benchmark (``Structure.to_unique_str(consider_zero=True)`` in AutoDL-Projects)
        counts 6,466 unique cells of 15,625; this key gives exactly its classes. Each
        node is written as a symbolic sum of its incoming edges, the terms sorted (so the
        order of a sum does not matter, which also merges relabellings of nodes 1 and 2):
        a ``none`` edge, or any edge leaving a zero node, is the term ``#`` (zero); a
        ``skip_connect`` edge is its input's expression itself; another op is
        ``(input)@op``. The output node's expression is the key, so edges that never
        reach the output drop out.

        As in the benchmark, zero terms stay in their sum (``x + 0`` differs from ``x``),
        and a node counts as zero only when its whole sum is one zero term, which only
        node 1 (a single input) can be; the default equivalence (:meth:`canonical`)
        instead removes every edge off the live input-to-output paths.

        Example:
            >>> space = NB201Space()
            >>> space.benchmark_key('|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|')
            '#+#+0'
        """
        ops = self._ops_of(arch)
        expr = ["0"]  # node 0: the cell input
        k = 0
        for i in range(1, N_NODES):
            terms = []
            for j in range(i):
                op = ops[k]
                k += 1
                if op == "none" or expr[j] == _ZERO:
                    terms.append(_ZERO)
                elif op == "skip_connect":
                    terms.append(expr[j])
                else:
                    terms.append(f"({expr[j]})@{op}")
            expr.append("+".join(sorted(terms)))
        return expr[-1]

    # ----------------------------------------------------------------- vectors
    @property
    def encoding_choices(self) -> list[int]:
        return [len(OPS)] * len(EDGES)

    def encode(self, arch: str) -> np.ndarray:
        return np.array([OPS.index(op) for op in self._ops_of(arch)], dtype=np.int64)

    def decode(self, vec: Any) -> str:
        arr = self._check_vector(vec)
        return self.format([OPS[i] for i in arr.tolist()])

    # ----------------------------------------------------------------- models
    def build(self, arch: Any, C: int = 16, N: int = 5, num_classes: int = 10) -> "TinyNetwork":
        """Build the benchmark network for ``arch`` (see :func:`build_network`)."""
        return build_network(arch, C=C, N=N, num_classes=num_classes)


# ===================================================================== network
class _None(nn.Module):
    """Placeholder for a ``none`` edge; the cell skips it (the edge contributes zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # only for direct calls
        return x.mul(0.0)


def _make_op(name: str, C: int) -> nn.Module:
    if name == "none":
        return _None()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, 1, 1)
    if name == "avg_pool_3x3":
        return AvgPool(3, stride=1, padding=1)
    raise InvalidArchitecture(f"unknown op {name!r}; valid ops: {', '.join(OPS)}")


class InferCell(nn.Module):
    """One NAS-Bench-201 cell with ``C`` channels in and out (edges in ``layers``)."""

    def __init__(self, ops: Sequence[str], C: int):
        super().__init__()
        self.ops = tuple(ops)
        self.layers = nn.ModuleList(_make_op(op, C) for op in self.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor] = [x]
        k = 0
        for i in range(1, N_NODES):
            total = None
            for j in range(i):
                if self.ops[k] != "none":
                    y = self.layers[k](nodes[j])
                    total = y if total is None else total + y
                k += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """Stride-2 residual block between stages: two ReLUConvBN 3x3 + AvgPool/Conv1x1 shortcut."""

    def __init__(self, C_in: int, C_out: int, stride: int = 2):
        super().__init__()
        if stride != 2:
            raise ValueError(f"ResNetBasicBlock here only reduces (stride 2), got stride={stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(C_in, C_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_b(self.conv_a(x))
        return self.downsample(x) + out


class TinyNetwork(nn.Module):
    """The NAS-Bench-201 macro skeleton around one cell; ``forward`` returns logits."""

    def __init__(self, ops: Sequence[str], C: int = 16, N: int = 5, num_classes: int = 10):
        super().__init__()
        if C < 1 or N < 0 or num_classes < 1:
            raise ValueError(f"need C >= 1, N >= 0, num_classes >= 1; got C={C}, N={N}, num_classes={num_classes}")
        self.expected_input_sz = 32  # read by GHN graph tracing (ppuda convention)
        self.stem = nn.Sequential(nn.Conv2d(3, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                self.cells.append(ResNetBasicBlock(C_prev, C_curr, 2))
            for _ in range(N):
                self.cells.append(InferCell(ops, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x))
        return self.classifier(x.reshape(x.size(0), -1))


def build_network(arch: Any, C: int = 16, N: int = 5, num_classes: int = 10) -> TinyNetwork:
    """Build the NAS-Bench-201 network of ``arch`` (string or structure).

    ``C=16, N=5, num_classes=10`` is the benchmark's CIFAR-10 setting.
    """
    ops = NB201Space()._ops_of(arch)
    return TinyNetwork(ops, C=C, N=N, num_classes=num_classes)
