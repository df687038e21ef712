"""Computational graphs of neural networks, as a GHN reads them.

A :class:`Graph` is a DAG whose nodes are operations of a network (parameterised
layers, pooling, sums, concatenations, ...) and whose edges follow the data flow.
Node order is always topological: every edge goes from a lower to a higher index.

:func:`extract` builds the graph of any ``torch.nn.Module`` from the autograd graph of
one forward pass, following the rules of the GHN-2 reference code (ppuda,
``deepnets1m/graph.py``) so that the graphs equal ppuda's up to node re-indexing:

* every parameterised layer becomes one node per predicted tensor: a ``Conv2d`` or
  ``Linear`` weight (``conv``; a grouped conv is ``sep_conv``, or ``dil_conv`` when
  dilated), then its bias (``bias``) right after it; a ``BatchNorm2d`` / ``LayerNorm``
  is a single ``bn`` / ``ln`` node that predicts weight and bias;
* parameter-free ops that GHN-2 knows are kept: residual sums (``sum``, >= 2 inputs),
  concatenations (``concat``, >= 2 inputs), max / avg pooling, global average pooling
  (``glob_avg``), attention (``msa``) and hard-sigmoid gating (``cse``);
* every other op (activations, reshapes, dropout, ...) is removed and its inputs are
  wired to its outputs;
* an ``input`` node feeds the first layer(s).

Where ppuda's rules depend on its node order or only work for its own modules, the
rules here are structural, which changes nothing for the models ppuda supports:

* ``cse`` is a multiplication that reads a ``Hard*`` activation through exactly one
  reshape, as in ppuda's own squeeze-and-excitation op, ``x * hardswish(fc(..)).view(..)``
  (ppuda: the node two places earlier in its order is a ``Hard*`` one). A product that
  reads the activation directly, like torchvision's ``SqueezeExcitation`` in
  MobileNetV3, is not a ``cse`` node in ppuda's graphs, so it is dropped here too;
  ``msa`` is a fused attention op, or the matmul
  that reads a softmax (ppuda: a ``Clone`` eleven places after a softmax), so
  torchvision's ``MultiheadAttention`` / ViT work (ppuda refuses torchvision's ViT);
  learned embeddings such as ViT's class token and positional encoding are
  ``pos_enc`` nodes feeding a ``concat`` / ``sum``, as ppuda builds its ``PosEnc``;
* a mean over all elements (no ``keepdim`` recorded) is dropped (ppuda keeps it unless
  it is last or followed by a cell parameter);
* layers are recognised with ``isinstance`` (ppuda: exact types), and a layer GHN-2
  cannot represent, or a parameter used by several ops, is an error
  (:class:`UnsupportedModelError`) instead of a warning and a partial graph;
* the input may feed several nodes (ppuda asserts that it feeds exactly one).
"""
from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# GHN-2's primitive vocabulary; the index of a name is its row in the GHN's op embedding.
PRIMITIVES: tuple[str, ...] = (
    "max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse", "sum",
    "concat", "input", "bias", "bn", "ln", "pos_enc", "glob_avg",
)
PRIMITIVE_ID: dict[str, int] = {p: i for i, p in enumerate(PRIMITIVES)}

__all__ = ["PRIMITIVES", "PRIMITIVE_ID", "Node", "Graph", "extract", "UnsupportedModelError",
           "SUPPORTED_LAYERS"]

#: What :func:`extract` can represent, for error messages and docs.
SUPPORTED_LAYERS = (
    "nn.Conv2d (any groups/dilation), nn.Linear, nn.BatchNorm2d, nn.LayerNorm "
    "(incl. torchvision LayerNorm2d), nn.MultiheadAttention (packed or separate q/k/v "
    "projections, no bias_k/bias_v), and learned embedding tensors of shape (1, ...) that "
    "are added to or concatenated with activations (positional encodings, class tokens)"
)


class UnsupportedModelError(ValueError):
    """The model uses a layer (or a parameter) that GHN-2's graphs cannot represent."""


@dataclass
class Node:
    """One operation of a network.

    Attributes:
        op: primitive type, one of :data:`PRIMITIVES`.
        name: parameter name for parameter nodes (``'layer1.0.conv1.weight'``);
            ``'input'`` for the input; otherwise the class name of the autograd op, as
            ppuda names it (``'AddBackward0'``, ``'CatBackward0'``, ``'MeanBackward1'``,
            ``'MaxPool2DWithIndicesBackward0'``, ...).
        shape: parameter shape; ``(1, 1, kh, kw)`` for pooling; ``None`` otherwise.
        params: names of the model parameters this node predicts, in order. A norm
            layer's node predicts its weight and then its bias.
        role: ``'classifier_weight'``, ``'classifier_bias'`` or ``''``.
        attrs: extra facts for inspection: ``module`` (path of the owning module) and
            ``module_type`` for parameter nodes; pooling / mean arguments for op nodes.
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
        input_shape: the shape of the tracing input :func:`extract` used (``None`` if
            the graph was built by hand).
        unused_params: parameters of the model that the forward pass never reached
            (they get no node and would not be predicted).
    """

    nodes: list[Node]
    edges: np.ndarray
    input_shape: tuple[int, ...] | None = None
    unused_params: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.summary().items())
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges: {counts})"

    def hop_edges(self, cutoff: int = 50) -> np.ndarray:
        """Real and virtual edges as an ``(E, 3)`` array ``[src, dst, hops]``.

        ``hops`` is 1 for a real edge and the directed shortest-path length for a
        virtual edge (GHN-2's virtual edges), which exists for every pair at most
        ``cutoff`` hops apart that has no real edge. ``cutoff=1`` gives only real edges.
        Rows are sorted by ``(src, dst)``.
        """
        from .ghn.batch import hop_edges  # the one hop-edge routine, shared with GraphBatch

        return hop_edges(len(self.nodes), self.edges, cutoff)[0]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (inverse: :meth:`from_dict`)."""
        def plain(v):
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, np.generic):
                return v.item()
            return v

        return {
            "nodes": [{"op": n.op, "name": n.name, "shape": plain(n.shape), "params": list(n.params),
                       "role": n.role, "attrs": {k: plain(v) for k, v in n.attrs.items()}}
                      for n in self.nodes],
            "edges": np.asarray(self.edges, dtype=np.int64).reshape(-1, 2).tolist(),
            "input_shape": plain(self.input_shape),
            "unused_params": list(self.unused_params),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Graph":
        """Rebuild a graph written by :meth:`to_dict` (list-valued attrs stay lists)."""
        nodes = [Node(n["op"], n["name"], None if n["shape"] is None else tuple(n["shape"]),
                      tuple(n["params"]), n.get("role", ""), dict(n.get("attrs", {})))
                 for n in d["nodes"]]
        for node in nodes:
            if node.op not in PRIMITIVE_ID:
                raise ValueError(f"unknown op {node.op!r} in node {node.name!r}; valid ops: {', '.join(PRIMITIVES)}")
        shape = d.get("input_shape")
        return cls(nodes, np.asarray(d["edges"], dtype=np.int64).reshape(-1, 2),
                   None if shape is None else tuple(shape), tuple(d.get("unused_params", ())))

    def summary(self) -> dict[str, int]:
        """Number of nodes of each primitive, in :data:`PRIMITIVES` order: ``{'conv': 21, ...}``."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return {p: counts[p] for p in PRIMITIVES if p in counts}

    def to_networkx(self):
        """The graph as a ``networkx.DiGraph``.

        Nodes are the integer indices with attributes ``op``, ``name`` and ``shape``;
        edges are the real edges.
        """
        import networkx as nx

        g = nx.DiGraph()
        for i, node in enumerate(self.nodes):
            g.add_node(i, op=node.op, name=node.name, shape=node.shape)
        g.add_edges_from((int(s), int(d)) for s, d in np.asarray(self.edges).reshape(-1, 2))
        return g

    def depths(self) -> np.ndarray:
        """Depth of every node: the length of the longest path from a source node."""
        from .ghn.batch import topological_levels  # one level sweep, shared with GraphBatch

        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        return topological_levels(len(self.nodes), edges[:, 0], edges[:, 1])

    def draw(self, path: str | None = None, ax=None, node_size: float | None = None,
             labels: bool = False):
        """Draw the graph with matplotlib, top (input) to bottom (output).

        Nodes are placed in layers by their depth (longest path from the input) and
        coloured by primitive, with a legend. Readable up to a few hundred nodes.

        Args:
            path: if given, save the figure there (the format follows the suffix).
            ax: a matplotlib ``Axes`` to draw into; a new figure is made otherwise.
            node_size: marker area; chosen from the number of nodes by default.
            labels: write each node's op next to it.

        Returns:
            the matplotlib ``Axes``.

        Example:
            >>> import torchvision
            >>> g = extract(torchvision.models.resnet18(num_classes=10))
            >>> ax = g.draw("resnet18.png")  # doctest: +SKIP
        """
        from .drawing import draw_graph

        return draw_graph(self, path, ax=ax, node_size=node_size, labels=labels)


# ============================================================================ extraction
# Autograd op names (the part before "Backward") of parameter-free ops that GHN-2 keeps.
_KEPT_OPS = {
    "Add": "sum",
    "Cat": "concat",
    "MaxPool2DWithIndices": "max_pool",
    "AvgPool2D": "avg_pool",
    "AdaptiveAvgPool2D": "glob_avg",
}
# Ops that only move data around; looked through when checking what an op feeds or reads.
_PASS_THROUGH = {
    "View", "UnsafeView", "Reshape", "ReshapeAlias", "Expand", "Transpose", "Permute",
    "Unsqueeze", "Squeeze", "Clone", "Select", "Slice", "Split", "SplitWithSizes", "Unbind",
    "T", "NativeDropout", "Alias", "AsStrided", "Contiguous", "Flatten", "Repeat", "Unflatten",
}
_META_MIN_PIXELS = 128 * 128  # trace='auto' uses the meta device above this input size
_MATMUL_OPS = {"Bmm", "Mm", "MatMul", "Matmul", "Mv", "Baddbmm", "Einsum"}
_SOFTMAX = ("Softmax", "SafeSoftmax", "_SafeSoftmax")


def _base(op_name: str) -> str:
    """'AddBackward0' -> 'Add' (the op, as ppuda's MODULES table keys it)."""
    i = op_name.find("Backward")
    return op_name if i < 0 else op_name[:i]


@dataclass
class _PInfo:
    """How one model parameter maps onto the graph."""

    name: str
    module_path: str
    module: Any
    kind: str  # 'weight', 'bias', 'norm_weight', 'norm_bias', 'embed'
    op: str  # primitive of its node ('' for norm_bias, which has none)
    linear_like: bool = False  # reached through a transpose in F.linear (ppuda's fc rewiring)


def _classify(name: str, module_path: str, module: Any, local: str, p: Any) -> _PInfo:
    """Decide what kind of node a reached parameter becomes, or raise for unsupported ones."""
    import torch.nn as nn

    mtype = type(module).__name__
    where = f"parameter {name!r} of module {module_path or '<root>'!r} ({mtype})"
    if isinstance(module, nn.Conv2d) and local in ("weight", "bias"):
        if local == "bias":
            return _PInfo(name, module_path, module, "bias", "bias")
        if module.groups > 1:
            op = "dil_conv" if min(module.dilation) > 1 else "sep_conv"
        else:
            op = "conv"
        return _PInfo(name, module_path, module, "weight", op)
    if isinstance(module, nn.Linear) and local in ("weight", "bias"):
        kind = "bias" if local == "bias" else "weight"
        return _PInfo(name, module_path, module, kind, "bias" if local == "bias" else "conv",
                      linear_like=local == "weight")
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm)) and local in ("weight", "bias"):
        op = "ln" if isinstance(module, nn.LayerNorm) else "bn"
        if local == "bias":
            return _PInfo(name, module_path, module, "norm_bias", "")
        return _PInfo(name, module_path, module, "norm_weight", op)
    if isinstance(module, nn.MultiheadAttention):
        if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return _PInfo(name, module_path, module, "weight", "conv", linear_like=True)
        if local == "in_proj_bias":
            return _PInfo(name, module_path, module, "bias", "bias")
        raise UnsupportedModelError(
            f"{where} is not supported: GHN-2 graphs cannot represent MultiheadAttention's "
            f"bias_k/bias_v (add_bias_kv=True). Supported layers: {SUPPORTED_LAYERS}")
    if not type(module).__module__.startswith("torch.") and p.dim() >= 3 and p.shape[0] == 1:
        return _PInfo(name, module_path, module, "embed", "pos_enc")
    if type(module).__module__.startswith("torch."):
        raise UnsupportedModelError(
            f"{where} is not supported: GHN-2 graphs cannot represent {mtype} layers. "
            f"Supported layers: {SUPPORTED_LAYERS}")
    raise UnsupportedModelError(
        f"{where} with shape {tuple(p.shape)} is a bare nn.Parameter used directly in "
        f"forward, which GHN-2 graphs cannot represent (only embeddings of shape (1, ...) "
        f"added to or concatenated with activations are). Supported layers: {SUPPORTED_LAYERS}")


def _resolve_input_shape(model: Any, input_shape: Any) -> tuple[int, ...]:
    if input_shape is None:
        sz = getattr(model, "expected_input_sz", None)
        if sz is None:
            return (1, 3, 32, 32)
        if isinstance(sz, int):
            return (1, 3, sz, sz)
        sz = tuple(int(s) for s in sz)
        if len(sz) == 3:  # ppuda's (C, H, W)
            return (1, *sz)
        if len(sz) == 2:
            return (1, 3, *sz)
        return sz
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must hold a batch size and at least one positive "
                         f"dimension, e.g. (1, 3, 32, 32); got {input_shape!r}")
    return shape


def _first_tensor(out: Any, model_name: str):
    from ._util import first_tensor  # ppuda's rule: the first output (e.g. DARTS' (logits, aux))

    try:
        return first_tensor(out, model_name)
    except TypeError as e:
        raise ValueError(str(e)) from None


def _param_owners(model: Any) -> dict[str, tuple[str, Any, str]]:
    """Parameter name -> (module path, module, local name), first owner of shared ones."""
    owners: dict[str, tuple[str, Any, str]] = {}
    seen: set[int] = set()
    for mpath, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                owners[f"{mpath}.{local}" if mpath else local] = (mpath, module, local)
    return owners


def _trace_meta(model: Any, shape: tuple[int, ...], dtype: Any):
    """Forward on the meta device: shapes only, no arithmetic, so the cost does not grow
    with the input size. Parameters and buffers are swapped for meta copies for the call
    (``functional_call``), so nothing of the model, running statistics included, changes."""
    import torch
    from torch.func import functional_call

    params = {n: torch.empty_like(p, device="meta").requires_grad_(p.is_floating_point() or p.is_complex())
              for n, p in model.named_parameters()}
    buffers = {n: torch.empty_like(b, device="meta") for n, b in model.named_buffers()}
    x = torch.empty(shape, device="meta", dtype=dtype)
    # a forward that caches tensors on the module (e.g. `self.pe = ...`) would keep meta
    # tensors, which break every later real call: put such attributes back afterwards
    before = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        with torch.enable_grad():
            out = functional_call(model, {**params, **buffers}, (x,), tie_weights=True, strict=False)
    finally:
        for m, attrs in before:
            for key, val in list(m.__dict__.items()):
                if isinstance(val, torch.Tensor) and val.is_meta and attrs.get(key, None) is not val:
                    if key in attrs:
                        m.__dict__[key] = attrs[key]
                    else:
                        del m.__dict__[key]
    return out, {id(t): n for n, t in params.items()}


def _trace_real(model: Any, shape: tuple[int, ...], device: Any, dtype: Any):
    """Forward on the model's own device, with every parameter requiring grad for the call."""
    import torch

    from ._util import cpu_threads

    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in grads:
            if p.is_floating_point() or p.is_complex():
                p.requires_grad_(True)  # frozen layers must still show up in autograd
        # a batch of one is too small to split across threads, and on a busy machine
        # the thread pool stalls such passes 10-100x (benchmarks/results/graph.md)
        with cpu_threads(1, device):
            x = torch.randn(*shape, device=device, dtype=dtype)
            with torch.enable_grad():
                out = model(x)
    finally:
        for p, req in grads:
            p.requires_grad_(req)
    return out, {id(p): n for n, p in model.named_parameters()}


def _forward_error(model: Any, shape: tuple[int, ...], e: Exception, where: str) -> ValueError:
    # name the shape: the usual cause is an input size the model does not take
    return ValueError(
        f"the forward pass of {type(model).__name__} failed on an input of shape {tuple(shape)}"
        f"{where} ({type(e).__name__}: {e}); pass the input shape the model expects as "
        f"input_shape=(N, C, H, W) or set model.expected_input_sz")


def _trace(model: Any, shape: tuple[int, ...], mode: str = "auto"):
    """One forward pass in eval mode (as ppuda's callers do: BN uses its running stats,
    dropout adds no ops). Returns (output tensor, {id(leaf tensor): parameter name}).

    ``mode``: ``'meta'`` (shapes only), ``'real'`` (a real forward) or ``'auto'`` (real
    for inputs up to 128x128 pixels; above, meta and a real forward if the model cannot
    run on the meta device, e.g. because it reads tensor values).
    """
    import torch

    if mode not in ("auto", "meta", "real"):
        raise ValueError(f"unknown trace mode {mode!r}; valid modes: 'auto', 'meta', 'real'")
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        out = None
        if mode == "auto":
            # a shapes-only pass costs ~1 ms per BN layer in Python; a real one grows with
            # the pixels: the real pass wins on CIFAR-sized inputs, the meta one on ImageNet's
            mode, fallback = ("meta", True) if math.prod(shape[2:]) > _META_MIN_PIXELS else ("real", False)
        else:
            fallback = False
        if mode == "meta":
            try:
                out, ids = _trace_meta(model, shape, dtype)
            except Exception as e:
                if not fallback:
                    raise _forward_error(model, shape, e, " on the meta device (try trace='real')") from e
        if out is None:
            try:
                out, ids = _trace_real(model, shape, device, dtype)
            except Exception as e:
                raise _forward_error(model, shape, e, "") from e
    finally:
        for m, was_training in modes:
            m.training = was_training
    return _first_tensor(out, type(model).__name__), ids


def extract(model: Any, input_shape: tuple[int, ...] | None = None, strict: bool = False,
            trace: str = "auto") -> Graph:
    """Build the GHN-2 computational graph of ``model``.

    The graph is read from the autograd graph of one forward pass, as the GHN-2
    reference code does, and equals ppuda's graph up to node order (same nodes by name,
    type and shape; same edges by node name; same classifier flags). The model is traced
    in eval mode; its training flags, ``requires_grad`` flags, parameters and buffers are
    left as they were, and no gradients or hooks remain.

    Args:
        model: any ``torch.nn.Module`` built from the layers in :data:`SUPPORTED_LAYERS`
            (plus any parameter-free ops). A tuple/list output counts by its first entry.
        input_shape: shape of the tracing input, batch dimension included. By default
            ``model.expected_input_sz`` (ppuda's convention: an int ``s`` means
            ``(1, 3, s, s)``) if the model has it, else ``(1, 3, 32, 32)``.
        strict: raise instead of warning when some parameters are not reached by the
            forward pass (they would get no node and would not be predicted).
        trace: how to run the forward pass. ``'real'``: on the model's device, as
            ppuda does. ``'meta'``: on the meta device (shapes only, no arithmetic, so
            the cost does not grow with the input size; the model's parameters and
            buffers are not touched). ``'auto'`` (default): real for inputs up to
            128x128 pixels, meta above (falling back to real if the model cannot run
            on the meta device, e.g. because it reads tensor values). Both give the
            same graph.

    Returns:
        a :class:`Graph` whose node order is topological and deterministic.

    Raises:
        UnsupportedModelError: a reached parameter belongs to a layer GHN-2 cannot
            represent (the message names the module, its type and what is supported), a
            parameter is used by more than one op, or (``strict``) a parameter is unused.
        ValueError: the forward pass fails on ``input_shape``, or the output does not
            depend on any parameter.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        >>> g = extract(net)
        >>> [(n.op, n.name) for n in g.nodes]  # doctest: +NORMALIZE_WHITESPACE
        [('input', 'input'), ('conv', '0.weight'), ('bias', '0.bias'), ('bn', '1.weight'),
         ('glob_avg', 'MeanBackward1'), ('conv', '5.weight'), ('bias', '5.bias')]
        >>> g.edges.tolist()
        [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]]
        >>> g.nodes[-1].role
        'classifier_bias'
    """
    shape = _resolve_input_shape(model, input_shape)
    out, leaf_names = _trace(model, shape, trace)
    if out.grad_fn is None:
        raise ValueError(f"the output of {type(model).__name__} does not depend on any "
                         f"parameter (it has no autograd history), so there is no graph to build")
    owners = _param_owners(model)
    leaves = {i: (n, *owners[n]) for i, n in leaf_names.items() if n in owners}
    try:
        graph = _build(out.grad_fn, leaves, shape)
    finally:
        del out  # frees the autograd graph and its saved tensors

    all_params = [name for name, _ in model.named_parameters()]
    reached = {pn for node in graph.nodes for pn in node.params}
    unused = tuple(n for n in all_params if n not in reached)
    graph.unused_params = unused
    if unused:
        msg = (f"{len(unused)} parameter tensor(s) of {type(model).__name__} are not used by the "
               f"forward pass on input {shape} and get no graph node (GHN-2 would not predict "
               f"them): {', '.join(unused[:10])}{' ...' if len(unused) > 10 else ''}")
        if strict:
            raise UnsupportedModelError(msg)
        warnings.warn(msg, stacklevel=2)
    return graph


def _build(root: Any, leaves: dict, shape: tuple[int, ...]) -> Graph:
    """Autograd graph (from ``root``) -> GHN-2 graph, in named passes (ppuda's order).
    See :func:`extract` for the rules."""
    ag = _read_autograd(root, leaves)
    g = _build_nodes(ag)
    embed_nodes = _add_embeddings(ag, g)
    _rewire_linear(g)
    _add_input(ag, g, embed_nodes)
    keep_op = _kept_ops(ag, g)
    kept, kpred, ksucc = _filter(g, keep_op)
    kept = _drop_single_input_merges(kept, kpred, ksucc, keep_op)
    return _finalise(ag, g, keep_op, kept, kpred, ksucc, shape)


@dataclass
class _Autograd:
    """The autograd functions of one forward pass and how they connect."""

    fns: list[Any]
    names: list[str]  # type name of each function, e.g. 'AddBackward0'
    infos: dict[int, _PInfo]  # id(param) -> how it maps onto the graph
    ins: list[list[int]]  # activation inputs (function indices)
    pins: list[list[int]]  # parameter inputs (param ids, in next_functions order)
    has_none: list[bool]  # reads a constant (no autograd history), e.g. the input
    consumers: list[list[int]]
    seq: list[int]  # autograd sequence numbers: the forward-pass order


@dataclass
class _Nodes:
    """The graph under construction: node records and adjacency sets."""

    kind: list[str] = field(default_factory=list)  # 'param', 'op' or 'input'
    payload: list[Any] = field(default_factory=list)  # param id, function index or None
    key: list[tuple] = field(default_factory=list)  # order key (forward-pass order)
    succ: list[set[int]] = field(default_factory=list)
    pred: list[set[int]] = field(default_factory=list)
    detached: list[int] = field(default_factory=list)  # weights reached through w.t() and alike
    embed_uses: list[tuple[int, int]] = field(default_factory=list)  # (param id, consuming fn)
    norm_bias_of: dict[int, str] = field(default_factory=dict)  # id(norm module) -> bias name
    entry: list[int] = field(default_factory=list)  # first node of each autograd function

    def new(self, kind: str, payload: Any, key: tuple) -> int:
        self.kind.append(kind)
        self.payload.append(payload)
        self.key.append(key)
        self.succ.append(set())
        self.pred.append(set())
        return len(self.kind) - 1

    def edge(self, a: int, b: int) -> None:
        if a != b:
            self.succ[a].add(b)
            self.pred[b].add(a)


def _collect_functions(root: Any) -> tuple[list[Any], dict[Any, int]]:
    """Every autograd function reachable from ``root`` (iteratively: deep nets overflow recursion)."""
    fn_index: dict[Any, int] = {root: 0}
    fns: list[Any] = [root]
    stack = [root]
    while stack:
        fn = stack.pop()
        for u, _ in fn.next_functions:
            if u is not None and u not in fn_index:
                fn_index[u] = len(fns)
                fns.append(u)
                stack.append(u)
    return fns, fn_index


def _read_autograd(root: Any, leaves: dict) -> _Autograd:
    """Per function: activation inputs, parameter inputs, consumers; every parameter used once."""
    fns, fn_index = _collect_functions(root)
    n_fn = len(fns)
    names = [type(f).__name__ for f in fns]
    infos: dict[int, _PInfo] = {}
    acc_param: dict[int, int] = {}  # fn idx of an AccumulateGrad -> id(param) (params only)
    for i, f in enumerate(fns):
        if names[i] == "AccumulateGrad":
            own = leaves.get(id(f.variable))
            if own is not None:  # other leaves that require grad are treated as constants
                acc_param[i] = id(f.variable)
                if id(f.variable) not in infos:
                    infos[id(f.variable)] = _classify(*own, f.variable)
    ins: list[list[int]] = [[] for _ in range(n_fn)]
    pins: list[list[int]] = [[] for _ in range(n_fn)]
    has_none = [False] * n_fn
    consumers: list[list[int]] = [[] for _ in range(n_fn)]
    param_users: dict[int, list[int]] = {}
    for i, f in enumerate(fns):
        if names[i] == "AccumulateGrad":
            continue
        for u, _ in f.next_functions:
            j = None if u is None else fn_index[u]
            if j is None or (names[j] == "AccumulateGrad" and j not in acc_param):
                has_none[i] = True
            elif names[j] == "AccumulateGrad":
                pins[i].append(acc_param[j])
                param_users.setdefault(acc_param[j], []).append(i)
            elif j not in ins[i]:
                ins[i].append(j)
                consumers[j].append(i)
    _check_single_use(param_users, infos)
    return _Autograd(fns, names, infos, ins, pins, has_none, consumers, [f._sequence_nr() for f in fns])


def _check_single_use(param_users: dict[int, list[int]], infos: dict[int, _PInfo]) -> None:
    for pid, users in param_users.items():
        if len(users) > 1:
            info = infos[pid]
            raise UnsupportedModelError(
                f"parameter {info.name!r} of module {info.module_path or '<root>'!r} "
                f"({type(info.module).__name__}) is used by {len(users)} operations (shared "
                f"weights or a layer applied more than once); GHN-2 graphs need every "
                f"parameter to be used exactly once")


def _build_nodes(ag: _Autograd) -> _Nodes:
    """One node per op, except that parameters absorb the op that consumes them: a weight
    node (then its bias node) stands for a convolution or a linear layer."""
    g = _Nodes()
    entry = [-1] * len(ag.fns)
    exit_ = [-1] * len(ag.fns)
    for info in ag.infos.values():
        if info.kind == "norm_bias":
            g.norm_bias_of[id(info.module)] = info.name
    for i in range(len(ag.fns)):
        if ag.names[i] == "AccumulateGrad":
            continue
        weights = [pid for pid in ag.pins[i] if ag.infos[pid].kind in ("weight", "norm_weight")]
        biases = [pid for pid in ag.pins[i] if ag.infos[pid].kind == "bias"]
        g.embed_uses += [(pid, i) for pid in ag.pins[i] if ag.infos[pid].kind == "embed"]
        if len(weights) > 1:
            raise UnsupportedModelError(
                f"autograd op {ag.names[i]} combines several weight tensors "
                f"({', '.join(ag.infos[p].name for p in weights)}); GHN-2 graphs cannot represent it")
        chain = weights + biases
        if not chain:
            entry[i] = exit_[i] = g.new("op", i, (ag.seq[i], 0))
            continue
        for k, pid in enumerate(chain):
            node = g.new("param", pid, (ag.seq[i], k))
            if k == 0:
                entry[i] = node
            else:
                g.edge(entry[i], node)  # weight -> bias, as ppuda links them
            exit_[i] = node
        w = weights[0] if weights else None
        if w is not None and (ag.infos[w].linear_like or (not ag.has_none[i] and not ag.ins[i])):
            g.detached.append(entry[i])
    for i in range(len(ag.fns)):
        if ag.names[i] != "AccumulateGrad":
            for j in ag.ins[i]:
                g.edge(exit_[j], entry[i])
    g.entry = entry
    return g


def _add_embeddings(ag: _Autograd, g: _Nodes) -> list[int]:
    """Learned embeddings (positional encodings, class tokens) become nodes feeding the
    sum or concatenation that uses them."""
    nodes = []
    for pid, i in g.embed_uses:
        info = ag.infos[pid]
        if not _feeds(i, ag.names, ag.consumers, {"Add", "Cat"}):
            raise UnsupportedModelError(
                f"parameter {info.name!r} of module {info.module_path or '<root>'!r} "
                f"({type(info.module).__name__}) is used by {ag.names[i]}, not added to or "
                f"concatenated with an activation; GHN-2 graphs cannot represent such a bare "
                f"parameter. Supported layers: {SUPPORTED_LAYERS}")
        node = g.new("param", pid, (ag.seq[i], -1))
        g.edge(node, g.entry[i])
        nodes.append(node)
    return nodes


def _rewire_linear(g: _Nodes) -> None:
    """ppuda's fc rewiring: a weight reached through ``w.t()`` takes over the inputs of
    the op it feeds, giving ``inputs -> weight -> (bias | op)`` like a convolution."""
    for w in g.detached:
        if g.pred[w]:
            continue
        for o in sorted(g.succ[w]):
            for a in g.pred[o] - {w}:
                g.succ[a].discard(o)
                g.edge(a, w)
            g.pred[o] = {w}


def _add_input(ag: _Autograd, g: _Nodes, embed_nodes: list[int]) -> None:
    """The input node feeds every node that nothing feeds (ppuda allows exactly one), and
    ops that read a constant (maybe the input) besides embeddings, e.g. ``x + pos_emb``."""
    embed_set = set(embed_nodes)
    sources = [v for v in range(len(g.kind)) if v not in embed_set and (
        not g.pred[v] or (g.kind[v] == "op" and ag.has_none[g.payload[v]] and g.pred[v] <= embed_set))]
    inp = g.new("input", None, (-1, 0))
    for v in sources:
        g.edge(inp, v)


def _kept_ops(ag: _Autograd, g: _Nodes) -> dict[int, str]:
    """Which op nodes GHN-2 keeps, and as which primitive."""
    keep_op: dict[int, str] = {}
    for v in range(len(g.kind)):
        if g.kind[v] != "op":
            continue
        i = g.payload[v]
        base = _base(ag.names[i])
        op = _KEPT_OPS.get(base)
        if base == "Mean":
            # AdaptiveAvgPool2d(1) is recorded as a mean with keepdim; other means are dropped
            op = "glob_avg" if getattr(ag.fns[i], "_saved_keepdim", False) is True else None
        elif base == "Mul":
            # GHN-2's cse: x * hardswish(...).view(...) (ppuda's squeeze-and-excitation)
            op = "cse" if _reads_reshaped(i, ag.names, ag.ins, ("Hard",)) else None
        elif base.startswith("ScaledDotProduct") or "MultiHeadAttention" in base:
            op = "msa"
        elif base in _MATMUL_OPS:
            # attention written out (or decomposed): softmax(q k^T) @ v is one msa node,
            # so that it has the same inputs as a fused scaled_dot_product_attention
            op = "msa" if _reads(i, ag.names, ag.ins, _SOFTMAX) else None
        if op is not None:
            keep_op[v] = op
    return keep_op


def _filter(g: _Nodes, keep_op: dict[int, str]):
    """Remove the ops GHN-2 does not keep, wiring their inputs to their outputs; returns
    the kept nodes in topological order and their adjacency."""
    order = _toposort(range(len(g.kind)), g.succ, g.pred, g.key)
    if len(order) != len(g.kind):
        raise UnsupportedModelError(
            "the traced graph has a cycle (a parameter is probably reused in a way GHN-2 "
            "graphs cannot represent)")
    kept = [v for v in order if g.kind[v] != "op" or v in keep_op]
    kept_set = set(kept)
    reach: dict[int, frozenset] = {}  # nearest kept nodes at or before each node
    kpred: dict[int, set[int]] = {}
    for v in order:
        acc: set[int] = set()
        for u in g.pred[v]:
            acc |= reach[u]
        if v in kept_set:
            kpred[v] = acc
            reach[v] = frozenset((v,))
        else:
            reach[v] = frozenset(acc)
    ksucc: dict[int, set[int]] = {v: set() for v in kept}
    for v, ps in kpred.items():
        for u in ps:
            ksucc[u].add(v)
    return kept, kpred, ksucc


def _drop_single_input_merges(kept: list[int], kpred: dict, ksucc: dict, keep_op: dict[int, str]) -> list[int]:
    """Sums and concatenations need >= 2 distinct inputs (ppuda's passes, in its order)."""
    for op in ("sum", "concat"):
        removed = []
        for v in kept:
            # decided in order: an earlier removal may give this node a second input
            if keep_op.get(v) != op or len(kpred[v]) > 1:
                continue
            removed.append(v)
            # removed nodes keep their edges until the pass ends, exactly as in ppuda
            for n1 in ksucc[v]:
                for n2 in kpred[v]:
                    if n1 != n2:
                        kpred[n1].add(n2)
                        ksucc[n2].add(n1)
        for v in removed:
            for u in kpred[v]:
                ksucc[u].discard(v)
            for w in ksucc[v]:
                kpred[w].discard(v)
            del kpred[v], ksucc[v]
        rm = set(removed)
        kept = [v for v in kept if v not in rm]
    return kept


def _finalise(ag: _Autograd, g: _Nodes, keep_op: dict[int, str], kept: list[int], kpred: dict,
              ksucc: dict, shape: tuple[int, ...]) -> Graph:
    """Final order, :class:`Node` records, edges and classifier roles."""
    final = _toposort(kept, ksucc, kpred, g.key)
    assert len(final) == len(kept), "graph became cyclic while removing ops"
    pos = {v: k for k, v in enumerate(final)}
    nodes = [_final_node(ag, g, keep_op, v) for v in final]
    edges = np.array(sorted((pos[u], pos[v]) for v in final for u in kpred[v]),
                     dtype=np.int64).reshape(-1, 2)
    sinks = [k for k, v in enumerate(final) if not ksucc[v]]
    if len(sinks) != 1:
        raise ValueError(
            f"the output is computed from {len(sinks)} separate branches ending in "
            f"{', '.join(nodes[k].name for k in sinks)}; GHN-2 graphs need one final op")
    _set_roles(nodes, edges)
    return Graph(nodes, edges, input_shape=tuple(shape))


def _final_node(ag: _Autograd, g: _Nodes, keep_op: dict[int, str], v: int) -> Node:
    if g.kind[v] == "input":
        return Node("input", "input")
    if g.kind[v] == "op":
        i = g.payload[v]
        return _op_node(keep_op[v], ag.names[i], ag.fns[i])
    info = ag.infos[g.payload[v]]
    params = (info.name,)
    if info.kind == "norm_weight" and id(info.module) in g.norm_bias_of:
        params = (info.name, g.norm_bias_of[id(info.module)])
    return Node(info.op, info.name, tuple(int(s) for s in _pshape(info)), params,
                attrs={"module": info.module_path, "module_type": type(info.module).__name__})


def _pshape(info: _PInfo) -> tuple[int, ...]:
    local = info.name.rsplit(".", 1)[-1]
    return tuple(getattr(info.module, local).shape)


def _op_node(op: str, name: str, fn: Any) -> Node:
    attrs: dict[str, Any] = {}
    shape = None
    if op in ("max_pool", "avg_pool"):
        for key in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad"):
            val = getattr(fn, "_saved_" + key, None)
            if val is not None:
                attrs[key] = tuple(val) if isinstance(val, (list, tuple)) else val
        ks = attrs.get("kernel_size", (3, 3))  # ppuda's fallback when torch does not report it
        ks = tuple(ks) * 2 if len(ks) == 1 else tuple(ks)
        shape = (1, 1, *(int(k) for k in ks))
    elif name.startswith("Mean"):
        attrs = {"dim": tuple(getattr(fn, "_saved_dim", ()) or ()),
                 "keepdim": bool(getattr(fn, "_saved_keepdim", False))}
    return Node(op, name, shape, attrs=attrs)


def _set_roles(nodes: list[Node], edges: np.ndarray) -> None:
    """ppuda's classifier flags: the last node (if a 1-d tensor) is the classifier bias and
    the node before it (if a >= 2-d tensor) the classifier weight.

    ppuda flags the last two nodes of its order; the node before the single sink is
    order-independent only when the sink has one input, so no weight is flagged otherwise.
    """
    n = len(nodes)
    last = nodes[n - 1]
    if last.params and last.shape is not None and len(last.shape) == 1:
        last.role = "classifier_bias"
    into_last = edges[edges[:, 1] == n - 1, 0] if len(edges) else np.zeros(0, np.int64)
    if len(into_last) == 1:
        prev = nodes[int(into_last[0])]
        if prev.params and prev.shape is not None and len(prev.shape) >= 2:
            prev.role = "classifier_weight"


def _reaches(starts: list[int], links: list[list[int]], names: list[str], hit) -> bool:
    """Does a walk from ``starts`` along ``links`` (inputs or consumers), going on only
    through data-movement ops, meet a function whose name satisfies ``hit``?"""
    stack, seen = list(starts), set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if hit(names[j]):
            return True
        if _base(names[j]) in _PASS_THROUGH:
            stack.extend(links[j])
    return False


def _reads(i: int, names: list[str], ins: list[list[int]], prefixes: tuple[str, ...]) -> bool:
    """Does fn ``i`` read (through data-movement ops) an op whose name starts with a prefix?"""
    return _reaches(ins[i], ins, names, lambda name: name.startswith(prefixes))


def _reads_reshaped(i: int, names: list[str], ins: list[list[int]], prefixes: tuple[str, ...]) -> bool:
    """Does fn ``i`` read, through exactly one data-movement op, an op whose name starts
    with a prefix? (ppuda's cse test looks two places back in its node order, which holds
    for ``hardswish -> view -> mul`` but not for a direct ``hardsigmoid -> mul``.)"""
    return any(_base(names[j]) in _PASS_THROUGH and any(names[k].startswith(prefixes) for k in ins[j])
               for j in ins[i])


def _feeds(i: int, names: list[str], consumers: list[list[int]], bases: set[str]) -> bool:
    """Does fn ``i`` (or a data-movement op after it) feed an op of one of ``bases``?"""
    return _base(names[i]) in bases or _reaches(consumers[i], consumers, names, lambda name: _base(name) in bases)


def _toposort(vs, succ, pred, key: list[tuple]) -> list[int]:
    """Kahn's algorithm over nodes ``vs``, taking the ready node with the smallest key
    (forward-pass order); shorter than ``vs`` when the nodes hold a cycle. (The GHN's
    batches need levels, not an order: ``ghnas.ghn.batch.topological_levels``.)"""
    indeg = {v: len(pred[v]) for v in vs}
    heap = [(key[v], v) for v in vs if indeg[v] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, v = heapq.heappop(heap)
        out.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (key[w], w))
    return out
