"""GHN-2: a graph hypernetwork that predicts all parameters of a network from its graph.

Re-implementation of the GHN-2 of Knyazev et al. (2021), "Parameter Prediction for
Unseen Deep Architectures", numerically matching the reference code (ppuda) and loading
its checkpoints. The flow for a batch of graphs:

1. node features = op embedding + shape embedding (:class:`~ghnas.ghn.layers.ShapeEncoder`);
2. a gated GNN sweeps forward then backward over each DAG, with virtual edges;
3. layer norm;
4. decoders turn each parameter node's embedding into a tensor of the max shape, which
   is cropped/tiled to the parameter's shape and rescaled (fan-in for weights,
   ``2*sigmoid`` for norm weights, ``tanh`` for biases).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn as nn

from ..graph import PRIMITIVES, Graph
from .batch import CLASSIFIER_BIAS, CLASSIFIER_WEIGHT, GraphBatch
from .layers import MLP, ConvDecoder, GatedGNN, MLPDecoder, ShapeEncoder, cpu_threads

Item = Union[nn.Module, Graph]

HYPERNETS = ("gatedgnn", "mlp")
DECODERS = ("conv", "mlp")
# the keys of ppuda's checkpoint config, plus our own 've_cutoff'
CONFIG_KEYS = ("max_shape", "num_classes", "hypernet", "decoder", "weight_norm", "ve", "layernorm", "hid",
               "ve_cutoff")
PPUDA_VE_CUTOFF = 50  # ppuda builds graphs with 50-hop virtual edges whenever ve=True
#: upper bounds on the config of a GHN read from a file (:meth:`GHN2.from_config`), far above
#: any real GHN (ppuda's GHN-2: hid 32, max_shape (64, 64, 11, 11)); they keep a crafted
#: config from building huge tables before its state dict is compared with it
CONFIG_BOUNDS = {"hid": 2048, "channels": 8192, "spatial": 64, "num_classes": 100_000, "ve_cutoff": 10_000}


def tile_to(w: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop or tile a batch ``(B, ...)`` of decoded tensors to ``(B, *shape)``.

    Extra trailing dimensions are indexed at 0, missing ones are added; each dimension
    is then cropped from the start, or tiled (element i taken from i mod size) when it
    is too small, as ppuda's ``_tile_params`` does for channels.
    """
    nd = len(shape)
    while w.dim() - 1 > nd:
        w = w[..., 0]
    while w.dim() - 1 < nd:
        w = w.unsqueeze(-1)
    w = w[(slice(None),) + tuple(slice(0, min(t, s)) for t, s in zip(shape, w.shape[1:]))]
    reps = [1] + [-(-t // s) for t, s in zip(shape, w.shape[1:])]
    if any(r > 1 for r in reps):  # repeat is a plain memory copy, much faster than a gather
        w = w.repeat(reps)[(slice(None),) + tuple(slice(0, t) for t in shape)]
    return w


def tile_into(dst: torch.Tensor, w: torch.Tensor) -> None:
    """Write ``tile_to(w[None], dst.shape)[0]`` into ``dst`` without building it first."""
    shape = tuple(dst.shape)
    w = tile_to(w[None], tuple(min(t, s) for t, s in zip(shape, _match_ndim(w, len(shape)).shape)))[0]
    if dst.is_contiguous() and all(t % s == 0 for t, s in zip(shape, w.shape)):
        # dim d of size r*s viewed as (r, s): element i = q*s + k takes w[k], i.e. w[i mod s]
        split = [v for t, s in zip(shape, w.shape) for v in (t // s, s)]
        src = w.reshape([v for s in w.shape for v in (1, s)])
        dst.view(split).copy_(src.expand(split))
    else:
        dst.copy_(tile_to(w[None], shape)[0])


def _match_ndim(w: torch.Tensor, nd: int) -> torch.Tensor:
    while w.dim() > nd:
        w = w[..., 0]
    while w.dim() < nd:
        w = w.unsqueeze(-1)
    return w


def normalize(w: torch.Tensor, kind: str, shape: Sequence[int]) -> torch.Tensor:
    """GHN-2's output scaling of a batch of predicted tensors of one ``shape``.

    Weights get fan-in scaling ``sqrt(beta / fan_in)`` with ``beta = 2`` (ReLU gain)
    except for depthwise (in = 1) and asymmetric (h < w) kernels, where ``beta = 1``;
    positional encodings (1, n, >=11, ...) stay as they are. Norm-layer weights are
    mapped into (0, 2) by ``2*sigmoid(x/2)``, biases into (-1, 1) by ``tanh(x/5)``.
    """
    if kind == "norm_weight":
        return 2 * torch.sigmoid(0.5 * w)
    if kind == "bias":
        return torch.tanh(0.2 * w)
    if len(shape) > 2 and shape[2] >= 11 and shape[0] == 1:
        return w
    no_relu = len(shape) > 2 and (shape[1] == 1 or (len(shape) > 3 and shape[2] < shape[3]))
    beta = 1.0 if no_relu else 2.0
    return w * (beta / math.prod(shape[1:])) ** 0.5


class GHN2(nn.Module):
    """Graph HyperNetwork GHN-2.

    Args:
        max_shape: largest (out, in, h, w) block the decoder produces; larger
            parameters are tiled from it.
        num_classes: classifier size the GHN predicts (models must match it).
        hid: node embedding size.
        ve_cutoff: virtual edges link nodes at most this many hops apart (GHN-2: 50;
            1 = no virtual edges).
        layernorm: layer norm on node embeddings before decoding.
        weight_norm: rescale predicted tensors (fan-in etc., see :func:`normalize`).
        hypernet: ``'gatedgnn'`` (GHN-2) or ``'mlp'`` (no message passing).
        decoder: ``'conv'`` (GHN-2) or ``'mlp'`` (GHN-1).

    Submodule names equal ppuda's, so its checkpoints load strictly (see
    :func:`ghnas.ghn.load_ghn`).

    On CPU, :meth:`predict` runs with :attr:`cpu_threads` intra-op threads (default 1):
    GHN-2 is a long chain of small ops, for which more threads mostly add
    synchronisation cost (severely so on a busy machine). ``None`` keeps torch's setting.

    Example:
        >>> import torch, numpy as np, ghnas
        >>> from ghnas.graph import Graph, Node
        >>> g = Graph([Node('input', 'input'),
        ...            Node('conv', 'conv.weight', (8, 3, 3, 3), ('conv.weight',)),
        ...            Node('bn', 'bn.weight', (8,), ('bn.weight', 'bn.bias')),
        ...            Node('glob_avg', 'pool'),
        ...            Node('conv', 'fc.weight', (10, 8), ('fc.weight',), 'classifier_weight'),
        ...            Node('bias', 'fc.bias', (10,), ('fc.bias',), 'classifier_bias')],
        ...           np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]))
        >>> ghn = ghnas.GHN2(hid=8, max_shape=(16, 16, 11, 11)).eval()
        >>> params = ghn.predict([g])[0]
        >>> {k: tuple(v.shape) for k, v in params.items()}['conv.weight']
        (8, 3, 3, 3)
    """

    cpu_threads: int | None = 1

    def __init__(self, max_shape: Sequence[int] = (64, 64, 11, 11), num_classes: int = 10, hid: int = 32,
                 ve_cutoff: int = PPUDA_VE_CUTOFF, layernorm: bool = True, weight_norm: bool = True,
                 hypernet: str = "gatedgnn", decoder: str = "conv"):
        super().__init__()
        max_shape = tuple(int(v) for v in max_shape)
        if len(max_shape) != 4 or min(max_shape) < 1:
            raise ValueError(f"max_shape must be 4 positive ints (out, in, h, w), got {max_shape}")
        if hypernet not in HYPERNETS:
            raise ValueError(f"unsupported hypernet {hypernet!r}; valid: {', '.join(HYPERNETS)}")
        if decoder not in DECODERS:
            raise ValueError(f"unsupported decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if int(hid) < 4 or int(hid) % 4:
            raise ValueError(f"hid must be a positive multiple of 4, got {hid}")
        if int(ve_cutoff) < 1:
            raise ValueError(f"ve_cutoff must be >= 1 (1 = no virtual edges), got {ve_cutoff}")
        self.max_shape = max_shape
        self.num_classes = int(num_classes)
        self.hid = int(hid)
        self.ve_cutoff = int(ve_cutoff)
        self.layernorm = bool(layernorm)
        self.weight_norm = bool(weight_norm)
        self.hypernet = hypernet
        self.decoder_type = decoder
        ve = self.ve_cutoff > 1
        hid = self.hid

        # construction order = ppuda's, so a seeded init draws the same random numbers
        if self.layernorm:
            self.ln = nn.LayerNorm(hid)
        self.embed = nn.Embedding(len(PRIMITIVES), hid)
        self.shape_enc = ShapeEncoder(hid, self.num_classes, max_shape)
        self.gnn = GatedGNN(hid, ve) if hypernet == "gatedgnn" else MLP(hid, (hid, hid))
        if decoder == "conv":
            self.decoder = ConvDecoder(hid, (hid * 4, hid * 8), max_shape, self.num_classes)
        else:
            self.decoder = MLPDecoder(hid, (hid * 2,), max_shape, self.num_classes)
        max_ch = max(max_shape[:2])
        self.decoder_1d = MLP(hid, (hid * 2, 2 * max_ch), last_relu=False)
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(max_ch, self.num_classes))

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments in ppuda's checkpoint format (``ve`` is a bool there)."""
        cfg: dict[str, Any] = {"max_shape": self.max_shape, "num_classes": self.num_classes,
                               "hypernet": self.hypernet, "decoder": self.decoder_type,
                               "weight_norm": self.weight_norm, "ve": self.ve_cutoff > 1,
                               "layernorm": self.layernorm, "hid": self.hid}
        if self.ve_cutoff not in (1, PPUDA_VE_CUTOFF):
            cfg["ve_cutoff"] = self.ve_cutoff  # not a ppuda key: ppuda cannot read such a file
        return cfg

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "GHN2":
        """Build a GHN from a ppuda-style config dict (keys as in :attr:`config`).

        The values are checked by :func:`config_kwargs` first, including the bounds of
        :data:`CONFIG_BOUNDS`, so a crafted config fails with a ``ValueError`` instead
        of allocating. Build under ``torch.device('meta')`` to get the parameter shapes
        without allocating them (``load_ghn`` does, to compare them with a state dict).
        """
        return cls(**config_kwargs(config))

    # ------------------------------------------------------------------ graphs
    def prepare(self, items: Item | Sequence[Item] | GraphBatch,
                input_shape: Sequence[int] | None = None) -> GraphBatch:
        """Graphs of models (extracted) or given graphs, preprocessed as one :class:`GraphBatch`."""
        if isinstance(items, GraphBatch):
            return items.to(self.embed.weight.device)
        items = [items] if isinstance(items, (nn.Module, Graph)) else list(items)
        graphs = [self._graph_of(it, input_shape) for it in items]
        check_num_classes(graphs, self.num_classes)
        return GraphBatch(graphs, self.shape_enc, self.max_shape, self.ve_cutoff, self.embed.weight.device)

    @staticmethod
    def _graph_of(item: Item, input_shape: Sequence[int] | None) -> Graph:
        if isinstance(item, Graph):
            return item
        if not isinstance(item, nn.Module):
            raise TypeError(f"expected an nn.Module or a ghnas.graph.Graph, got {type(item).__name__}")
        try:
            from ..graph import extract
        except ImportError as e:  # pragma: no cover - depends on the graph module
            raise RuntimeError("graph extraction (ghnas.graph.extract) is not available; "
                               "pass ghnas.graph.Graph objects instead") from e
        if input_shape is None:
            return extract(item)
        return extract(item, input_shape)

    # ------------------------------------------------------------------ forward parts
    def embed_nodes(self, batch: GraphBatch, intermediate: bool = False):
        """Node embeddings that the decoders read (after layer norm).

        With ``intermediate=True`` returns a dict with ``after_shape_enc``,
        ``after_gnn`` and ``after_ln`` (the last equals ``after_gnn`` without layernorm).
        """
        x = self.shape_enc(self.embed(batch.node_types), batch.shape_ind)
        x0 = x
        x = self.gnn(x, batch.sweeps) if isinstance(self.gnn, GatedGNN) else self.gnn(x)
        x1 = x
        if self.layernorm:
            x = self.ln(x)
        if intermediate:
            return {"after_shape_enc": x0, "after_gnn": x1, "after_ln": x}
        return x

    def decode(self, x: torch.Tensor, batch: GraphBatch,
               into: Sequence[Mapping[str, torch.Tensor]] | None = None) -> list[dict[str, torch.Tensor]]:
        """Predicted tensors per graph from node embeddings ``x`` (one decoder call per key).

        With ``into`` (one ``{name: tensor}`` per graph), the predictions are written
        into those tensors instead (under ``torch.no_grad()``) and an empty list is returned.
        """
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(batch.num_graphs)]
        for plan in batch.plans:
            key = plan.key
            xk = x.index_select(0, plan.nodes)
            n = xk.shape[0]
            if len(key) == 2 and key[1] > 0:
                w = self.decoder(xk, (key[0], key[1], 1, 1), class_pred=True)
            elif len(key) == 2:
                w = self.decoder_1d(xk).view(n, 2, -1)
                if key[1] < 0:
                    w = self.bias_class(w)
            elif len(key) == 3:
                w = self.decoder_1d(xk).view(n, -1, 1, 1)
            else:
                w = self.decoder(xk, key)
            for grp in plan.groups:
                t = w.index_select(0, grp.pos)
                if grp.row is not None:
                    t = t[:, grp.row]
                if self.weight_norm:  # elementwise, so the same before or after tiling (and cheaper)
                    t = normalize(t, grp.kind, grp.shape)
                if into is not None:
                    for (b, name), tensor in zip(grp.targets, t.unbind(0)):
                        tile_into(into[b][name], tensor)
                    continue
                t = tile_to(t, grp.shape)
                for (b, name), tensor in zip(grp.targets, t.contiguous().unbind(0)):
                    out[b][name] = tensor
        if into is not None:
            return []
        return [{name: d[name] for name in names} for d, names in zip(out, batch.param_names)]

    # ------------------------------------------------------------------ public API
    def predict(self, items: Item | Sequence[Item] | GraphBatch,
                input_shape: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """Predict parameters for one or many networks in a single batched GHN pass.

        Args:
            items: models (their graphs are extracted), :class:`~ghnas.graph.Graph`
                objects, a mix, or a prepared :class:`GraphBatch`.
            input_shape: input shape for graph extraction, e.g. ``(1, 3, 32, 32)``.

        Returns:
            one ``{parameter name: tensor}`` dict per item, in the model's parameter
            order (for a graph: in node order). The tensors are outputs of the GHN
            (differentiable w.r.t. its parameters when grad is enabled), ready for
            ``torch.func.functional_call``. Parameters that the forward pass never
            uses (e.g. behind NAS-Bench-201 ``none`` edges) get no prediction.

        Raises:
            ValueError: the classifier size differs from ``num_classes``, or a
                model's parameters and its graph's parameter nodes do not match.
        """
        if isinstance(items, (nn.Module, Graph)):
            items = [items]
        elif not isinstance(items, GraphBatch):
            items = list(items)
        batch = self.prepare(items, input_shape)
        models = [] if isinstance(items, GraphBatch) else items
        for b, it in enumerate(models):
            if isinstance(it, nn.Module):
                _check_model_params(it, batch.graphs[b], b)
        with cpu_threads(self.cpu_threads if self.embed.weight.device.type == "cpu" else None):
            out = self.decode(self.embed_nodes(batch), batch)
        dtype = self.embed.weight.dtype
        if any(v.dtype != dtype for d in out for v in d.values()):
            # under autocast: hand out parameters in the GHN's own dtype, not bfloat16
            out = [{k: v.to(dtype) for k, v in d.items()} for d in out]
        for b, it in enumerate(models):
            if isinstance(it, nn.Module):  # the model's own parameter order
                # parameters the forward pass never uses (dead ops) have no node: none predicted
                out[b] = {name: out[b][name] for name, _ in it.named_parameters() if name in out[b]}
        return out

    def forward(self, model: nn.Module, input_shape: Sequence[int] | None = None,
                bn_train: bool = True) -> nn.Module:
        """Predict all parameters of ``model`` and write them into it (in place).

        Afterwards, unless ``bn_train=False``, every ``BatchNorm2d`` is set to
        ``training=True, track_running_stats=False`` as ppuda does, so it normalises
        with batch statistics (predicted networks have no running statistics).

        Example:
            >>> import torchvision, ghnas
            >>> ghn = ghnas.GHN2(hid=8, max_shape=(16, 16, 11, 11)).eval()
            >>> net = ghn(torchvision.models.resnet18(num_classes=10))  # doctest: +SKIP
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"GHN2 expects an nn.Module, got {type(model).__name__}; "
                            f"use ghn.predict(...) for graphs or lists")
        batch = self.prepare([model], input_shape)
        _check_model_params(model, batch.graphs[0], 0)
        with torch.no_grad(), cpu_threads(self.cpu_threads if self.embed.weight.device.type == "cpu" else None):
            # tiles go straight into the parameters: one pass over their memory instead of two
            self.decode(self.embed_nodes(batch), batch, into=[dict(model.named_parameters())])
        if bn_train:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats = False
                    m.training = True
        return model


def _config_int(key: str, value: Any, low: int, high: int) -> int:
    # bools are ints in Python, and floats like 1e300 or inf would pass int() or overflow it
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
        raise ValueError(f"GHN config {key} must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"GHN config {key}={value} is out of range: valid values are {low}..{high}")
    return value


def config_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a ppuda-style GHN config and turn it into :class:`GHN2` arguments.

    Raises:
        ValueError: naming the bad key and value: unknown or missing keys, wrong types,
            or values outside :data:`CONFIG_BOUNDS` (``hid`` a multiple of 4 up to 2048,
            ``max_shape`` 4 ints with channels up to 8192 and equal spatial sizes up
            to 64, ``num_classes`` up to 100,000, ``ve_cutoff`` up to 10,000).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"GHN config must be a dict, got {type(config).__name__}")
    unknown = sorted(map(str, set(config) - set(CONFIG_KEYS)))
    if unknown:
        raise ValueError(f"unsupported GHN config key(s) {unknown[:10]}; valid keys: {', '.join(CONFIG_KEYS)}")
    for req in ("max_shape", "num_classes"):
        if req not in config:
            raise ValueError(f"GHN config lacks the required key {req!r} (has: {sorted(config)})")
    b = CONFIG_BOUNDS
    kw: dict[str, Any] = {}
    shape = config["max_shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 4:
        raise ValueError(f"GHN config max_shape must be 4 ints (out, in, h, w), got {shape!r}"[:200])
    kw["max_shape"] = tuple(_config_int(f"max_shape[{i}]", v, 1, b["channels"] if i < 2 else b["spatial"])
                            for i, v in enumerate(shape))
    if kw["max_shape"][2] != kw["max_shape"][3]:
        raise ValueError(f"GHN config max_shape must have equal spatial sizes, got {kw['max_shape']}")
    kw["num_classes"] = _config_int("num_classes", config["num_classes"], 1, b["num_classes"])
    if "hid" in config:
        kw["hid"] = _config_int("hid", config["hid"], 4, b["hid"])
        if kw["hid"] % 4:
            raise ValueError(f"GHN config hid must be a multiple of 4, got {kw['hid']}")
    for key, valid in (("hypernet", HYPERNETS), ("decoder", DECODERS)):
        if key in config:
            if config[key] not in valid:
                raise ValueError(f"unsupported {key} {config[key]!r}; valid: {', '.join(valid)}"[:200])
            kw[key] = config[key]
    # ppuda's defaults: ve=False, layernorm=False, weight_norm=False
    for key in ("weight_norm", "layernorm", "ve"):
        if key in config and not (isinstance(config[key], (bool, int)) and config[key] in (0, 1)):
            raise ValueError(f"GHN config {key} must be a bool, got {config[key]!r}"[:200])
    kw["weight_norm"] = bool(config.get("weight_norm", False))
    kw["layernorm"] = bool(config.get("layernorm", False))
    if "ve_cutoff" in config:
        kw["ve_cutoff"] = _config_int("ve_cutoff", config["ve_cutoff"], 1, b["ve_cutoff"])
    else:
        kw["ve_cutoff"] = PPUDA_VE_CUTOFF if config.get("ve", False) else 1
    return kw


def check_num_classes(graphs: Sequence[Graph], num_classes: int) -> None:
    """Raise ``ValueError`` if a graph's classifier does not have ``num_classes`` outputs
    (the decoder would otherwise tile its classifier rows into a wrong-sized layer)."""
    for b, g in enumerate(graphs):
        for node in g.nodes:
            if node.role in (CLASSIFIER_WEIGHT, CLASSIFIER_BIAS) and node.shape is not None \
                    and int(node.shape[0]) != num_classes:
                raise ValueError(
                    f"the classifier of model {b} ({node.name!r}) has {int(node.shape[0])} outputs, "
                    f"but this GHN predicts classifiers for {num_classes} classes; build the model "
                    f"with num_classes={num_classes} or use a GHN trained for {int(node.shape[0])} classes")


def _check_model_params(model: nn.Module, graph: Graph, index: int) -> None:
    params = dict(model.named_parameters())
    predicted: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes:
        for name in node.params:
            predicted[name] = tuple(node.shape) if node.shape is not None else ()
    # parameters the forward pass never reaches (e.g. ops behind NB201 `none` edges) cannot
    # change the output; extract() already warned about them, so they are left as they are
    unused = set(graph.unused_params)
    missing = [n for n in params if n not in predicted and n not in unused]
    if missing:
        raise ValueError(f"model {index}: {len(missing)} parameter(s) are not predicted by any graph node: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    extra = [n for n in predicted if n not in params]
    if extra:
        raise ValueError(f"model {index}: graph nodes predict parameter(s) the model does not have: "
                         f"{extra[:10]}{' ...' if len(extra) > 10 else ''}")
    bad = [(n, tuple(params[n].shape), s) for n, s in predicted.items() if tuple(params[n].shape) != s]
    if bad:
        n, want, got = bad[0]
        raise ValueError(f"model {index}: parameter {n!r} has shape {want} but its graph node has shape {got}"
                         + (f" ({len(bad) - 1} more mismatches)" if len(bad) > 1 else ""))
