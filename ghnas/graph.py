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
        depth = np.zeros(len(self.nodes), dtype=np.int64)
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        # edges sorted by destination: every source index is final before it is read
        for s, d in edges[np.argsort(edges[:, 1], kind="stable")]:
            if depth[s] + 1 > depth[d]:
                depth[d] = depth[s] + 1
        return depth

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
        from matplotlib.lines import Line2D

        n = len(self.nodes)
        depth = self.depths()
        n_layers = int(depth.max()) + 1 if n else 1
        width = max(np.bincount(depth).max() if n else 1, 1)
        pos = np.zeros((n, 2))
        for level in range(n_layers):
            members = np.nonzero(depth == level)[0]
            k = len(members)
            for j, i in enumerate(members):
                pos[i] = ((j - (k - 1) / 2.0), -level)

        if ax is None:
            size = (min(4 + 0.6 * width, 30), min(3 + 0.25 * n_layers, 60))
            if path is not None:
                # a bare Figure needs no display and leaves pyplot's state alone
                from matplotlib.figure import Figure

                ax = Figure(figsize=size).subplots()
            else:
                import matplotlib.pyplot as plt

                _, ax = plt.subplots(figsize=size)
        if node_size is None:
            node_size = float(np.clip(4000.0 / max(n, 1), 12, 120))

        colors = _OP_COLORS
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        for s, d in edges:
            # edges that skip layers are bent so they do not hide behind the nodes they pass
            bend = 0.0 if depth[d] - depth[s] <= 1 else 0.35
            ax.annotate("", xy=pos[d], xytext=pos[s],
                        arrowprops=dict(arrowstyle="-|>", lw=0.5, color="0.5", alpha=0.7,
                                        shrinkA=3, shrinkB=3, mutation_scale=7,
                                        connectionstyle=f"arc3,rad={bend}"))
        ops = [node.op for node in self.nodes]
        present = [p for p in PRIMITIVES if p in set(ops)]
        for p in present:
            idx = [i for i, o in enumerate(ops) if o == p]
            ax.scatter(pos[idx, 0], pos[idx, 1], s=node_size, color=colors[p], edgecolors="k",
                       linewidths=0.4, zorder=3)
        if labels:
            for i, node in enumerate(self.nodes):
                ax.text(pos[i, 0], pos[i, 1], " " + node.op, fontsize=6, va="center", zorder=4)
        handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=colors[p],
                          markeredgecolor="k", label=p) for p in present]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  title="op")
        ax.set_axis_off()
        ax.set_title(f"{n} nodes, {len(edges)} edges")
        if path is not None:
            ax.figure.savefig(path, bbox_inches="tight", dpi=120)
        return ax


# Distinct colours per primitive for Graph.draw (convolutions in greens/blues).
_OP_COLORS = {
    "conv": "#2ca02c", "sep_conv": "#17becf", "dil_conv": "#1f77b4", "bias": "#e377c2",
    "bn": "#ff7f0e", "ln": "#ffdd57", "sum": "#d62728", "concat": "#9467bd",
    "max_pool": "#8c564b", "avg_pool": "#c49c94", "glob_avg": "#7f7f7f", "msa": "#222222",
    "cse": "#bcbd22", "pos_enc": "#aec7e8", "input": "#ffffff",
}

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
    """Autograd graph (from ``root``) -> GHN-2 graph. See :func:`extract` for the rules."""
    # ---- 1. collect autograd functions (iteratively: deep nets overflow recursion)
    fn_index: dict[Any, int] = {}
    fns: list[Any] = []
    stack = [root]
    fn_index[root] = 0
    fns.append(root)
    while stack:
        fn = stack.pop()
        for u, _ in fn.next_functions:
            if u is not None and u not in fn_index:
                fn_index[u] = len(fns)
                fns.append(u)
                stack.append(u)
    n_fn = len(fns)
    names = [type(f).__name__ for f in fns]

    # ---- 2. per function: activation inputs, parameter inputs, consumers
    infos: dict[int, _PInfo] = {}  # id(param) -> info
    acc_param: dict[int, int] = {}  # fn idx of an AccumulateGrad -> id(param) (params only)
    for i, f in enumerate(fns):
        if names[i] == "AccumulateGrad":
            var = f.variable
            own = leaves.get(id(var))
            if own is not None:  # other leaves that require grad are treated as constants
                acc_param[i] = id(var)
                if id(var) not in infos:
                    infos[id(var)] = _classify(*own, var)
    ins: list[list[int]] = [[] for _ in range(n_fn)]
    pins: list[list[int]] = [[] for _ in range(n_fn)]  # param ids in next_functions order
    has_none = [False] * n_fn
    consumers: list[list[int]] = [[] for _ in range(n_fn)]
    param_users: dict[int, list[int]] = {}
    for i, f in enumerate(fns):
        if names[i] == "AccumulateGrad":
            continue
        for u, _ in f.next_functions:
            if u is None:
                has_none[i] = True
                continue
            j = fn_index[u]
            if names[j] == "AccumulateGrad":
                if j in acc_param:
                    pins[i].append(acc_param[j])
                    param_users.setdefault(acc_param[j], []).append(i)
                else:
                    has_none[i] = True
                continue
            if j not in ins[i]:
                ins[i].append(j)
                consumers[j].append(i)
    for pid, users in param_users.items():
        if len(users) > 1:
            info = infos[pid]
            raise UnsupportedModelError(
                f"parameter {info.name!r} of module {info.module_path or '<root>'!r} "
                f"({type(info.module).__name__}) is used by {len(users)} operations (shared "
                f"weights or a layer applied more than once); GHN-2 graphs need every "
                f"parameter to be used exactly once")

    # ---- 3. graph nodes: parameters absorb the autograd function that consumes them
    # node record: [kind, payload, order key]; kind in 'param', 'op', 'input'
    node_kind: list[str] = []
    node_payload: list[Any] = []
    node_key: list[tuple] = []
    seq = [f._sequence_nr() for f in fns]

    succ: list[set[int]] = []
    pred: list[set[int]] = []

    def new_node(kind: str, payload: Any, key: tuple) -> int:
        node_kind.append(kind)
        node_payload.append(payload)
        node_key.append(key)
        succ.append(set())
        pred.append(set())
        return len(node_kind) - 1

    entry = [-1] * n_fn
    exit_ = [-1] * n_fn

    def add_edge(a: int, b: int) -> None:
        if a != b:
            succ[a].add(b)
            pred[b].add(a)

    embed_edges: list[tuple[int, int]] = []  # (param id, consuming fn)
    detached: list[int] = []  # weight nodes reached through a parameter-only op (e.g. w.t())
    norm_bias_of: dict[int, str] = {}  # id(norm module) -> bias name
    for pid, info in infos.items():
        if info.kind == "norm_bias":
            norm_bias_of[id(info.module)] = info.name
    for i in range(n_fn):
        if names[i] == "AccumulateGrad":
            continue
        weights = [pid for pid in pins[i] if infos[pid].kind in ("weight", "norm_weight")]
        biases = [pid for pid in pins[i] if infos[pid].kind == "bias"]
        for pid in pins[i]:
            if infos[pid].kind == "embed":
                embed_edges.append((pid, i))
        if len(weights) > 1:
            raise UnsupportedModelError(
                f"autograd op {names[i]} combines several weight tensors "
                f"({', '.join(infos[p].name for p in weights)}); GHN-2 graphs cannot represent it")
        chain = weights + biases
        if chain:
            for k, pid in enumerate(chain):
                node = new_node("param", pid, (seq[i], k))
                if k == 0:
                    entry[i] = node
                else:
                    add_edge(entry[i], node)  # weight -> bias, as ppuda links them
                exit_[i] = node
            w = weights[0] if weights else None
            if w is not None and (infos[w].linear_like or (not has_none[i] and not ins[i])):
                detached.append(entry[i])
        else:
            node = new_node("op", i, (seq[i], 0))
            entry[i] = exit_[i] = node
    for i in range(n_fn):
        if names[i] == "AccumulateGrad":
            continue
        for j in ins[i]:
            add_edge(exit_[j], entry[i])

    embed_nodes: list[int] = []
    for pid, i in embed_edges:
        info = infos[pid]
        if not _feeds(i, names, consumers, {"Add", "Cat"}):
            raise UnsupportedModelError(
                f"parameter {info.name!r} of module {info.module_path or '<root>'!r} "
                f"({type(info.module).__name__}) is used by {names[i]}, not added to or "
                f"concatenated with an activation; GHN-2 graphs cannot represent such a bare "
                f"parameter. Supported layers: {SUPPORTED_LAYERS}")
        node = new_node("param", pid, (seq[i], -1))
        add_edge(node, entry[i])
        embed_nodes.append(node)

    # ---- 4. ppuda's fc rewiring: a weight reached through w.t() takes over the inputs of
    # the op it feeds, giving  inputs -> weight -> (bias | op)  like a convolution.
    for w in detached:
        if pred[w]:
            continue
        for o in sorted(succ[w]):
            moved = pred[o] - {w}
            for a in moved:
                succ[a].discard(o)
                add_edge(a, w)
            pred[o] = {w}

    # ---- 5. input node: feeds every node that nothing feeds (ppuda allows exactly one),
    # and ops that read a constant (maybe the input) besides embeddings, e.g. x + pos_emb
    embed_set = set(embed_nodes)
    sources = [v for v in range(len(node_kind)) if v not in embed_set and (
        not pred[v] or (node_kind[v] == "op" and has_none[node_payload[v]] and pred[v] <= embed_set))]
    inp = new_node("input", None, (-1, 0))
    for v in sources:
        add_edge(inp, v)

    # ---- 6. which op nodes GHN-2 keeps
    n_nodes = len(node_kind)
    keep_op: dict[int, str] = {}
    for v in range(n_nodes):
        if node_kind[v] != "op":
            continue
        i = node_payload[v]
        base = _base(names[i])
        op = _KEPT_OPS.get(base)
        if base == "Mean":
            # AdaptiveAvgPool2d(1) is recorded as a mean with keepdim; other means are dropped
            op = "glob_avg" if getattr(fns[i], "_saved_keepdim", False) is True else None
        elif base == "Mul":
            # GHN-2's cse: x * hardswish(...).view(...) (ppuda's squeeze-and-excitation)
            op = "cse" if _reads_reshaped(i, names, ins, ("Hard",)) else None
        elif base.startswith("ScaledDotProduct") or "MultiHeadAttention" in base:
            op = "msa"
        elif base in _MATMUL_OPS:
            # attention written out (or decomposed): softmax(q k^T) @ v is one msa node,
            # so that it has the same inputs as a fused scaled_dot_product_attention
            op = "msa" if _reads(i, names, ins, _SOFTMAX) else None
        if op is not None:
            keep_op[v] = op

    # ---- 7. remove the other ops, wiring their inputs to their outputs
    order = _toposort(n_nodes, succ, pred, node_key)
    if order is None:
        raise UnsupportedModelError(
            "the traced graph has a cycle (a parameter is probably reused in a way GHN-2 "
            "graphs cannot represent)")
    kept = [v for v in order if node_kind[v] != "op" or v in keep_op]
    kept_set = set(kept)
    reach: dict[int, frozenset] = {}
    kpred: dict[int, set[int]] = {}
    for v in order:
        acc: set[int] = set()
        for u in pred[v]:
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

    # ---- 8. sums and concatenations need >= 2 distinct inputs (ppuda's passes, in its order)
    for op in ("sum", "concat"):
        removed = []
        for v in kept:
            if keep_op.get(v) != op:
                continue
            if len(kpred[v]) > 1:
                continue
            # removed nodes keep their edges until the pass ends, exactly as in ppuda
            for n1 in ksucc[v]:
                for n2 in kpred[v]:
                    if n1 != n2:
                        kpred[n1].add(n2)
                        ksucc[n2].add(n1)
            removed.append(v)
        if removed:
            rm = set(removed)
            for v in removed:
                for u in kpred[v]:
                    ksucc[u].discard(v)
                for w in ksucc[v]:
                    kpred[w].discard(v)
                del kpred[v], ksucc[v]
            kept = [v for v in kept if v not in rm]

    # ---- 9. final order, nodes, edges, classifier roles
    final = _toposort_subset(kept, ksucc, kpred, node_key)
    pos = {v: k for k, v in enumerate(final)}
    nodes: list[Node] = []
    for v in final:
        kind = node_kind[v]
        if kind == "input":
            nodes.append(Node("input", "input"))
        elif kind == "param":
            info = infos[node_payload[v]]
            params = (info.name,)
            if info.kind == "norm_weight" and id(info.module) in norm_bias_of:
                params = (info.name, norm_bias_of[id(info.module)])
            nodes.append(Node(info.op, info.name, tuple(int(s) for s in _pshape(info)), params,
                              attrs={"module": info.module_path,
                                     "module_type": type(info.module).__name__}))
        else:
            i = node_payload[v]
            nodes.append(_op_node(keep_op[v], names[i], fns[i]))
    edges = np.array(sorted((pos[u], pos[v]) for v in final for u in kpred[v]),
                     dtype=np.int64).reshape(-1, 2)

    sinks = [k for k, v in enumerate(final) if not ksucc[v]]
    if len(sinks) != 1:
        raise ValueError(
            f"the output is computed from {len(sinks)} separate branches ending in "
            f"{', '.join(nodes[k].name for k in sinks)}; GHN-2 graphs need one final op")
    _set_roles(nodes, edges)
    return Graph(nodes, edges, input_shape=tuple(shape))


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


def _reads(i: int, names: list[str], ins: list[list[int]], prefixes: tuple[str, ...]) -> bool:
    """Does fn ``i`` read (through data-movement ops) an op whose name starts with a prefix?"""
    stack, seen = list(ins[i]), set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if names[j].startswith(prefixes):
            return True
        if _base(names[j]) in _PASS_THROUGH:
            stack.extend(ins[j])
    return False


def _reads_reshaped(i: int, names: list[str], ins: list[list[int]], prefixes: tuple[str, ...]) -> bool:
    """Does fn ``i`` read, through exactly one data-movement op, an op whose name starts
    with a prefix? (ppuda's cse test looks two places back in its node order, which holds
    for ``hardswish -> view -> mul`` but not for a direct ``hardsigmoid -> mul``.)"""
    return any(_base(names[j]) in _PASS_THROUGH and any(names[k].startswith(prefixes) for k in ins[j])
               for j in ins[i])


def _feeds(i: int, names: list[str], consumers: list[list[int]], bases: set[str]) -> bool:
    """Does fn ``i`` (or a data-movement op after it) feed an op of one of ``bases``?"""
    if _base(names[i]) in bases:
        return True
    stack, seen = list(consumers[i]), set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        b = _base(names[j])
        if b in bases:
            return True
        if b in _PASS_THROUGH:
            stack.extend(consumers[j])
    return False


def _kahn(vs, succ, pred, key: list[tuple]) -> list[int]:
    """Kahn's algorithm over nodes ``vs``, taking the ready node with the smallest key
    (forward-pass order); shorter than ``vs`` when the nodes hold a cycle."""
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


def _toposort(n: int, succ: list[set[int]], pred: list[set[int]], key: list[tuple]) -> list[int] | None:
    """Topological order of nodes ``0..n-1``, or ``None`` if the graph has a cycle."""
    out = _kahn(range(n), succ, pred, key)
    return out if len(out) == n else None


def _toposort_subset(vs: list[int], succ: dict, pred: dict, key: list[tuple]) -> list[int]:
    out = _kahn(vs, succ, pred, key)
    assert len(out) == len(vs), "graph became cyclic while removing ops"
    return out

