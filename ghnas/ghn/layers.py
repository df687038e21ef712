"""Building blocks of GHN-2: message MLPs, the shape encoder, the gated GNN and decoders.

Submodule and parameter names follow the reference implementation (ppuda) exactly, so
that its checkpoints load with ``load_state_dict(strict=True)``.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _act(relu: bool) -> nn.Module:
    return nn.ReLU(inplace=True) if relu else nn.Identity()


class MLP(nn.Module):
    """Linear layers with ReLU in between, stored as ``fc = Sequential(Linear, act, ...)``.

    ``last_relu`` controls the activation after the final layer (ppuda's message MLPs
    keep it, its 1-d decoder drops it).
    """

    def __init__(self, in_features: int, hid: Sequence[int], last_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for j, n in enumerate(hid):
            layers.append(nn.Linear(in_features if j == 0 else hid[j - 1], n))
            layers.append(_act(last_relu or j < len(hid) - 1))
        self.fc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


# --------------------------------------------------------------------------- shapes
def shape_to_4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Map a 1-4 d parameter shape to (out, in, h, w) as GHN-2's shape encoder sees it."""
    s = tuple(int(v) for v in shape)
    if len(s) == 1:
        return (s[0], 1, 1, 1)
    if len(s) == 2:
        return (s[0], s[1], 1, 1)
    if len(s) == 3:
        if s[0] == 1 and min(s[1:]) > 1:  # a (1, tokens, dim) positional encoding
            side = int(np.floor(s[1] ** 0.5))
            return (1, s[2], side, side)
        return (s[0], s[1], s[2], 1)
    if len(s) == 4:
        return s  # type: ignore[return-value]
    raise ValueError(f"cannot encode a parameter of shape {s}: GHN-2 handles 1-4 dimensional tensors")


class ShapeEncoder(nn.Module):
    """Adds embeddings of a node's (out, in, h, w) shape to its op embedding.

    Each dimension is binned: channels into the values GHN-2 saw during training
    (``channels``), spatial sizes into ``spatial``. A value that was not seen is mapped
    to the nearest seen one (2x2 kernels count as 3x3, 4-7 channels as 8), with a warning.
    Nodes without a shape use the extra last row of each table.
    """

    def __init__(self, hid: int, num_classes: int, max_shape: Sequence[int]):
        super().__init__()
        if hid % 4:
            raise ValueError(f"hid must be divisible by 4 for the shape encoder, got {hid}")
        if max_shape[2] != max_shape[3]:
            raise ValueError(f"max_shape must have equal spatial sizes, got {tuple(max_shape)}")
        self.num_classes = num_classes
        ch = ([1, 3, num_classes] + list(range(8, 64, 8)) + list(range(64, 4096, 16))
              + list(range(4096, 8192 + 1, 32)))
        self.channels = np.unique(ch)
        self.spatial = np.unique(list(range(1, max(12, max_shape[3]), 2)) + [14, 16])
        self._ch_index = {int(c): i for i, c in enumerate(self.channels)}
        self._sp_index = {int(c): i for i, c in enumerate(self.spatial)}
        self.embed_spatial = nn.Embedding(len(self.spatial) + 1, hid // 4)
        self.embed_channel = nn.Embedding(len(self.channels) + 1, hid // 4)
        #: warn when a shape is mapped to the nearest known one; off for GHNs meta-trained by
        #: ghnas, which learned the mapped shapes of their own space
        self.warn_unknown = True
        self._lookup = lru_cache(maxsize=None)(self._lookup_uncached)

    def __getstate__(self):
        # the per-instance lru_cache wraps a bound method, which pickle cannot store;
        # without this a GHN cannot go to other processes (multiprocessing, Ray)
        state = dict(super().__getstate__())
        state.pop("_lookup", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lookup = lru_cache(maxsize=None)(self._lookup_uncached)

    @property
    def dummy_index(self) -> tuple[int, int, int, int]:
        n_ch, n_s = len(self.channels), len(self.spatial)
        return (n_ch, n_ch, n_s, n_s)

    def _map(self, v: int, table: np.ndarray, index: dict[int, int], small: dict[int, int]) -> int:
        if v in index:
            return index[v]
        if v in small:
            return index[small[v]]
        if 1 <= v < table[-1]:
            return int(np.argmin(np.abs(table - v)))  # first (smaller) value on ties
        return len(table) - 1  # outside the known range: the largest value

    def _lookup_uncached(self, shape4: tuple[int, int, int, int]) -> tuple[tuple[int, ...], bool]:
        ch_small = {c: 8 for c in range(4, 8)}
        sp_small = {2: 3}
        ind = (self._map(shape4[0], self.channels, self._ch_index, ch_small),
               self._map(shape4[1], self.channels, self._ch_index, ch_small),
               self._map(shape4[2], self.spatial, self._sp_index, sp_small),
               self._map(shape4[3], self.spatial, self._sp_index, sp_small))
        known = (shape4[0] in self._ch_index and shape4[1] in self._ch_index
                 and shape4[2] in self._sp_index and shape4[3] in self._sp_index)
        return ind, known

    def shape_index(self, shape: Sequence[int] | None) -> tuple[tuple[int, ...], bool]:
        """Embedding-table rows (out, in, h, w) for a shape and whether all four were seen in training."""
        if shape is None:
            return self.dummy_index, True
        return self._lookup(shape_to_4d(shape))

    def describe(self, ind: Sequence[int]) -> list[int]:
        """The shape values that the rows ``ind`` stand for."""
        return [int(self.channels[i]) if k < 2 else int(self.spatial[i]) for k, i in enumerate(ind)]

    def forward(self, x: torch.Tensor, shape_ind: torch.Tensor) -> torch.Tensor:
        emb = torch.cat((self.embed_channel(shape_ind[:, 0]), self.embed_channel(shape_ind[:, 1]),
                         self.embed_spatial(shape_ind[:, 2]), self.embed_spatial(shape_ind[:, 3])), dim=1)
        return x + emb


_WARNED_SHAPES: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()


def warn_unknown_shape(shape: Sequence[int], mapped: Sequence[int]) -> None:
    """Warn once per process and shape that a shape is mapped to the nearest known one
    (Python's own once-per-location filter is reset whenever any code changes the
    warning filters, so it would repeat on every GHN call)."""
    key = (tuple(int(v) for v in shape), tuple(int(v) for v in mapped))
    if key in _WARNED_SHAPES:
        return
    _WARNED_SHAPES.add(key)
    warnings.warn(f"the GHN's shape encoding has no entry for the shape {key[0]}; the closest known "
                  f"shape {key[1]} is used instead (as in GHN-2: harmless for a GHN meta-trained on "
                  "such networks)", stacklevel=3)


# --------------------------------------------------------------------------- GNN
def cpu_threads(n: int | None):
    """Run the block with ``n`` intra-op CPU threads (``None``: leave the setting alone);
    :func:`ghnas._util.cpu_threads`, the one thread limiter."""
    from .._util import cpu_threads as _limit

    return _limit(n, "cpu")


class GatedGNN(nn.Module):
    """GHN-2's gated graph network: one forward and one backward sweep over the DAG.

    Each node's state is updated by a GRU cell shared by all nodes. Its input is the sum
    of ``mlp`` over the node's predecessors (successors in the backward sweep) along
    real edges, plus, with virtual edges, ``mlp_ve / hops`` over all nodes at most
    ``ve_cutoff`` hops away (real edges count there too, with hops = 1).

    Nodes are updated one topological generation at a time. All neighbours a node reads
    lie in earlier generations, so this equals the node-by-node sweep of the reference.
    Messages depend only on the sending node, so both MLPs run once per node (fused
    into one) and a sparse matrix per generation sums them along the edges.
    """

    #: CPU threads for the sweeps. Their ops are tiny and sequential, so extra threads
    #: only add synchronisation (badly so on a busy machine); ``None`` keeps torch's setting.
    cpu_threads: int | None = 1

    def __init__(self, hid: int, ve: bool):
        super().__init__()
        self.ve = ve
        self.mlp = MLP(hid, ((hid // 2) if ve else hid, hid))
        if ve:
            self.mlp_ve = MLP(hid, (hid // 2, hid))
        self.gru = nn.GRUCell(hid, hid)

    def _message_weights(self):
        """Weights of ``x -> [mlp(x), mlp_ve(x)]`` as one two-layer MLP."""
        a0, a2 = self.mlp.fc[0], self.mlp.fc[2]
        if not self.ve:
            return a0.weight, a0.bias, a2.weight, a2.bias
        b0, b2 = self.mlp_ve.fc[0], self.mlp_ve.fc[2]
        return (torch.cat([a0.weight, b0.weight]), torch.cat([a0.bias, b0.bias]),
                torch.block_diag(a2.weight, b2.weight), torch.cat([a2.bias, b2.bias]))

    def forward(self, x: torch.Tensor, sweeps: Sequence[Sequence["Generation"]]) -> torch.Tensor:
        """Update node states ``x`` (N, C) along ``sweeps`` (see :class:`GraphBatch`)."""
        w0, b0, w2, b2 = self._message_weights()
        gw = (self.gru.weight_ih, self.gru.weight_hh, self.gru.bias_ih, self.gru.bias_hh)
        k = 2 if self.ve else 1
        # float32 even under autocast: the ops are tiny (nothing to gain from bfloat16), and the
        # in-place updates need one dtype
        x = x.float()
        hx = x.clone()  # updated in place, generation by generation (autograd tracks it)
        with cpu_threads(self.cpu_threads if x.device.type == "cpu" else None), \
                torch.autocast(x.device.type, enabled=False):
            self._sweep(x, hx, sweeps, (w0, b0, w2, b2), gw, k)
        return hx

    @staticmethod
    def _sweep(x, hx, sweeps, mw, gw, k) -> None:
        w0, b0, w2, b2 = mw
        n, c = x.shape
        for sweep in sweeps:
            # row i holds node i's outgoing messages: [mlp, mlp_ve] -> viewed as 2 rows of C
            out = x.new_zeros(n, k * c)
            for gen in sweep:
                m = torch.sparse.mm(gen.adj, out.view(k * n, c))
                h = torch.gru_cell(m, hx.index_select(0, gen.nodes), *gw)
                hx.index_copy_(0, gen.nodes, h)
                if gen.sends:
                    out.index_copy_(0, gen.nodes, F.relu(F.linear(F.relu(F.linear(h, w0, b0)), w2, b2)))


class Generation:
    """Nodes updated together in one sweep step, and how their messages are summed.

    ``adj`` is a sparse (len(nodes), k*N) matrix over the message table of all nodes
    (k = 2 rows per node with virtual edges: ``mlp`` then ``mlp_ve`` output). ``sends``:
    whether any node reads these nodes' messages later in the sweep.
    """

    __slots__ = ("nodes", "adj", "sends")

    def __init__(self, nodes: torch.Tensor, adj: torch.Tensor, sends: bool):
        self.nodes, self.adj, self.sends = nodes, adj, sends

    def to(self, device) -> "Generation":
        return Generation(self.nodes.to(device), self.adj.to(device), self.sends)


# --------------------------------------------------------------------------- decoders
def decoder_channels(key: tuple[int, ...], max_shape: Sequence[int], class_pred: bool) -> tuple[int, int, int, int]:
    """(out, in, h, w) of the slice of the max-size decoder output that a key needs."""
    n_out = max_shape[0] if class_pred else min(max_shape[0], key[0])
    n_in = min(max_shape[1], key[1])
    h = min(max_shape[2], key[2]) if len(key) > 2 else 1
    w = min(max_shape[3], key[3]) if len(key) > 3 else 1
    return n_out, n_in, h, w


class ConvDecoder(nn.Module):
    """GHN-2's convolutional decoder: node embedding -> (out, in, h, w) weight block.

    ``fc`` maps an embedding to ``hid[0]`` feature maps of ``max_shape[2:]``; two 1x1
    convolutions turn them into ``max_shape[0] * max_shape[1]`` channels. Only the
    rows needed for the requested (out, in, h, w) corner are computed, which gives the
    same numbers as computing the full block and slicing it.
    """

    def __init__(self, in_features: int, hid: Sequence[int], out_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.out_shape = tuple(int(v) for v in out_shape)
        self.num_classes = num_classes
        spatial = self.out_shape[2] * self.out_shape[3]
        self.fc = nn.Sequential(nn.Linear(in_features, hid[0] * spatial), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for j, n_hid in enumerate(hid):
            last = j == len(hid) - 1
            n_out = self.out_shape[0] * self.out_shape[1] if last else hid[j + 1]
            layers += [nn.Conv2d(n_hid, n_out, 1), _act(not last)]
        self.conv = nn.Sequential(*layers)
        self.class_layer_predictor = nn.Sequential(nn.ReLU(inplace=True),
                                                   nn.Conv2d(self.out_shape[0], num_classes, 1))
        self._rows: dict = {}

    def _fc_rows(self, h: int, w: int, device) -> torch.Tensor:
        """Rows of ``fc`` for the top-left h x w corner, ordered (y, x, channel)."""
        key = ("fc", h, w, str(device))
        if key not in self._rows:
            H, W = self.out_shape[2:]
            c = torch.arange(self.fc[0].out_features // (H * W)).view(1, 1, -1)
            rows = c * H * W + torch.arange(h).view(-1, 1, 1) * W + torch.arange(w).view(1, -1, 1)
            self._rows[key] = rows.flatten().to(device)
        return self._rows[key]

    def _conv_rows(self, n_out: int, n_in: int, device) -> torch.Tensor:
        key = ("conv", n_out, n_in, str(device))
        if key not in self._rows:
            rows = torch.arange(n_out).view(-1, 1) * self.out_shape[1] + torch.arange(n_in).view(1, -1)
            self._rows[key] = rows.flatten().to(device)
        return self._rows[key]

    def forward(self, x: torch.Tensor, key: tuple[int, ...], class_pred: bool = False) -> torch.Tensor:
        """Returns (N, out, in, h, w), or (N, num_classes, in) when ``class_pred``.

        The 1x1 convolutions run as matrix products over a channels-last layout, which
        is the same arithmetic as ppuda's ``Conv2d`` calls and much faster on CPU.
        """
        n = x.shape[0]
        n_out, n_in, h, w = decoder_channels(key, self.out_shape, class_pred)
        lin, c0, c2 = self.fc[0], self.conv[0], self.conv[2]
        rows = self._fc_rows(h, w, x.device)
        x = F.relu(F.linear(x, lin.weight.index_select(0, rows), lin.bias.index_select(0, rows)))
        x = x.view(n, h, w, -1)  # channels last
        x = F.relu(F.linear(x, c0.weight.flatten(1), c0.bias))
        w2, b2 = c2.weight.flatten(1), c2.bias
        if n_out * n_in != c2.out_channels:
            rows = self._conv_rows(n_out, n_in, x.device)
            w2, b2 = w2.index_select(0, rows), b2.index_select(0, rows)
        x = F.linear(x, w2, b2).view(n, h, w, n_out, n_in)
        if class_pred:  # the class layer reads the out-channel axis at spatial position (0, 0)
            cls = self.class_layer_predictor[1]
            x = F.linear(F.relu(x[:, 0, 0].transpose(1, 2)), cls.weight.flatten(1), cls.bias)  # N, in, classes
            return x.transpose(1, 2)
        return x.permute(0, 3, 4, 1, 2)


class MLPDecoder(nn.Module):
    """The MLP decoder of ppuda (used by GHN-1): one MLP to the whole max-size block."""

    def __init__(self, in_features: int, hid: Sequence[int], out_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.out_shape = tuple(int(v) for v in out_shape)
        self.num_classes = num_classes
        self.mlp = MLP(in_features, (*hid, int(np.prod(self.out_shape))), last_relu=False)
        self.class_layer_predictor = nn.Sequential(nn.ReLU(inplace=True),
                                                   nn.Linear(hid[0], num_classes * self.out_shape[0]))

    def forward(self, x: torch.Tensor, key: tuple[int, ...], class_pred: bool = False) -> torch.Tensor:
        n = x.shape[0]
        if class_pred:
            x = self.class_layer_predictor(self.mlp.fc[0](x))
            n_in = min(self.out_shape[1], key[1])
            return x.view(n, self.num_classes, self.out_shape[1])[:, :, :n_in]
        n_out, n_in, h, w = decoder_channels(key, self.out_shape, False)
        return self.mlp(x).view(n, *self.out_shape)[:, :n_out, :n_in, :h, :w]
