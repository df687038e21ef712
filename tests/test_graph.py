"""Tests of ghnas.graph (GHN-2 graph extraction) and ghnas.nets (adjust_net)."""
from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import search_spaces
from ghnas.graph import PRIMITIVES, Graph, Node, UnsupportedModelError, extract
from ghnas.nets import adjust_net
from search_spaces.darts import DARTS_V2

from fixture_models import SmallCNN


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _one_thread():
    # the test machine is shared: one intra-op thread avoids oversubscription stalls
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)




def build_fixture_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "small_cnn":
        model = SmallCNN()
    elif name == "resnet18":
        model = adjust_net(torchvision.models.resnet18(num_classes=10))
    elif name == "darts_c16_l8":
        model = search_spaces.get("darts").build(DARTS_V2, C=16, layers=8, num_classes=10)
    else:
        raise KeyError(name)
    return model.eval()


def labels(names, ops, shapes, edges) -> list[str]:
    """Content labels that identify nodes up to re-indexing.

    Parameter names are unique; other nodes (sums, pools, ...) are told apart by their
    name, type and the labels of their inputs, computed in topological order.
    """
    n = len(names)
    preds: list[list[int]] = [[] for _ in range(n)]
    for s, d in edges:
        preds[d].append(s)
    out: list[str] = [""] * n
    for v in range(n):  # both graphs are stored in a topological order
        assert all(p < v for p in preds[v])
        shape = tuple(shapes[v]) if shapes[v] is not None else None
        unique = "." in names[v] or names[v] == "input"
        key = (names[v], ops[v], shape, () if unique else tuple(sorted(out[p] for p in preds[v])))
        out[v] = repr(key)
    return out


def load_fixture(parity_dir, name: str) -> dict:
    return json.loads((parity_dir / f"{name}.json").read_text())


# counts of primitives, nodes and real edges listed in the fixture README
README_COUNTS = {
    "small_cnn": ({"input": 1, "conv": 3, "bias": 2, "bn": 2, "max_pool": 1, "glob_avg": 1}, 10, 9),
    "resnet18": ({"input": 1, "conv": 21, "bn": 20, "sum": 8, "glob_avg": 1, "bias": 1}, 52, 59),
    "darts_c16_l8": ({"input": 1, "conv": 86, "bn": 83, "sep_conv": 60, "sum": 32, "dil_conv": 6,
                      "concat": 10, "max_pool": 10, "glob_avg": 1, "bias": 1}, 290, 347),
}


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "darts_c16_l8"])
def test_parity_with_ppuda_graphs(parity_dir, name):
    ref = load_fixture(parity_dir, name)["graph"]
    model = build_fixture_model(name)
    g = extract(model)

    counts, n_nodes, n_real = README_COUNTS[name]
    assert g.summary() == {p: counts[p] for p in PRIMITIVES if p in counts}
    assert len(g) == n_nodes == ref["num_nodes"]
    assert len(g.edges) == n_real == ref["num_real_edges"]

    rn = ref["nodes"]
    re = np.array(ref["edges"], dtype=np.int64)
    real = re[re[:, 2] == 1, :2]
    lr = labels([n["name"] for n in rn], [n["type"] for n in rn], [n["shape"] for n in rn], real)
    lo = labels([n.name for n in g.nodes], [n.op for n in g.nodes], [n.shape for n in g.nodes], g.edges)
    # same nodes (name, type, shape), same real edges, same virtual edges with their hops
    assert Counter(lr) == Counter(lo)
    assert Counter((lr[s], lr[d]) for s, d in real) == Counter((lo[s], lo[d]) for s, d in g.edges)
    hop = g.hop_edges(50)
    assert len(hop) == ref["num_edges"]
    assert (Counter((lr[s], lr[d], int(h)) for s, d, h in re)
            == Counter((lo[s], lo[d], int(h)) for s, d, h in hop))
    # type ids are the GHN's embedding rows
    assert (Counter((n["name"], n["type_id"]) for n in rn)
            == Counter((n.name, n.type_id) for n in g.nodes))
    # classifier flags
    ref_w = [n["name"] for n in rn if n.get("is_last_weight")]
    ref_b = [n["name"] for n in rn if n.get("is_last_bias")]
    assert [n.name for n in g.nodes if n.role == "classifier_weight"] == ref_w
    assert [n.name for n in g.nodes if n.role == "classifier_bias"] == ref_b
    assert g.nodes[-1].role == "classifier_bias" and g.nodes[-2].role == "classifier_weight"
    # every parameter is predicted by exactly one node (ppuda's "MATCHED")
    predicted = [p for n in g.nodes for p in n.params]
    assert sorted(predicted) == sorted(n for n, _ in model.named_parameters())
    assert g.unused_params == ()


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_real_and_meta_tracing_agree(name):
    model = build_fixture_model(name)
    a, b = extract(model, trace="meta"), extract(model, trace="real")
    assert [(n.op, n.name, n.shape, n.params, n.role) for n in a.nodes] == \
           [(n.op, n.name, n.shape, n.params, n.role) for n in b.nodes]
    assert np.array_equal(a.edges, b.edges)


def test_bn_node_predicts_weight_then_bias():
    g = extract(SmallCNN())
    bn = [n for n in g.nodes if n.op == "bn"]
    assert [n.params for n in bn] == [("bn1.weight", "bn1.bias"), ("bn2.weight", "bn2.bias")]
    conv1 = next(i for i, n in enumerate(g.nodes) if n.name == "conv1.weight")
    assert g.nodes[conv1 + 1].name == "conv1.bias"  # the bias node right after its weight
    assert [1, 2] in g.edges.tolist() or [conv1, conv1 + 1] in g.edges.tolist()
    pool = next(n for n in g.nodes if n.op == "max_pool")
    assert pool.shape == (1, 1, 2, 2) and pool.attrs["kernel_size"] == (2, 2)


# ----------------------------------------------------------------------------- order, state
def test_order_is_topological_and_deterministic():
    model = build_fixture_model("resnet18")
    a, b = extract(model), extract(model)
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert np.array_equal(a.edges, b.edges)
    assert a.nodes[0].op == "input"
    assert (a.edges[:, 0] < a.edges[:, 1]).all()
    assert len({tuple(e) for e in a.edges.tolist()}) == len(a.edges)
    assert a.edges.dtype == np.int64 and a.edges.shape[1] == 2


@pytest.mark.parametrize("trace", ["meta", "real"])
def test_model_state_is_left_alone(trace):
    torch.manual_seed(0)
    model = SmallCNN().train()
    model.bn2.eval()
    model.conv2.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    extract(model, trace=trace)
    assert {n: m.training for n, m in model.named_modules()} == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BN running stats and parameters untouched
        assert v.device.type == "cpu"
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_thread_setting_is_restored():
    torch.set_num_threads(2)  # the autouse fixture restores the outer setting afterwards
    extract(SmallCNN(), trace="real")
    assert torch.get_num_threads() == 2


def test_tensors_cached_in_forward_are_not_left_on_meta():
    class Cache(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)
            self.cached = None

        def forward(self, x):
            self.cached = x.new_zeros(1)  # a lazily built constant, as some models keep
            return self.fc(self.conv(x).mean((2, 3)))

    model = Cache()
    extract(model, trace="meta")
    assert model.cached is None
    model(torch.randn(1, 3, 8, 8))  # still runs for real


# ----------------------------------------------------------------------------- torchvision
def test_resnet50_adjusted_and_at_224():
    small = extract(adjust_net(torchvision.models.resnet50(num_classes=10)))
    assert small.input_shape == (1, 3, 32, 32)
    assert small.summary() == {"conv": 54, "sum": 16, "input": 1, "bias": 1, "bn": 53, "glob_avg": 1}
    large = extract(torchvision.models.resnet50(), input_shape=(1, 3, 224, 224))
    assert large.summary()["max_pool"] == 1 and len(large) == len(small) + 1
    assert large.nodes[-1].name == "fc.bias" and large.nodes[-2].role == "classifier_weight"


def test_mobilenet_v2():
    g = extract(adjust_net(torchvision.models.mobilenet_v2(num_classes=10)))
    assert g.summary() == {"sep_conv": 17, "conv": 36, "sum": 10, "input": 1, "bias": 1, "bn": 52,
                           "glob_avg": 1}
    dw = next(n for n in g.nodes if n.op == "sep_conv")
    assert dw.shape[1] == 1  # depthwise


def test_mobilenet_v3_squeeze_excitation_is_not_cse():
    # ppuda drops torchvision's x * hardsigmoid(fc(..)) products (its cse test looks for a
    # Hard* op two places back, i.e. behind a reshape); checked against ppuda's graph in
    # tests/fixtures/ghn2_parity_extra/mobilenet_v3_small.json
    g = extract(adjust_net(torchvision.models.mobilenet_v3_small(num_classes=10)))
    s = g.summary()
    assert "cse" not in s
    assert s["glob_avg"] == 10


def test_ppuda_style_squeeze_excitation_is_cse():
    class SE(nn.Module):  # as ppuda's ChannelSELayer: x * hardswish(fc2(relu(fc1(mean(x))))).view(b, c, 1, 1)
        def __init__(self, c=16):
            super().__init__()
            self.conv = nn.Conv2d(3, c, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(c, c // 2), nn.Linear(c // 2, c)
            self.fc = nn.Linear(c, 10)
            self.expected_input_sz = 32

        def forward(self, x):
            x = self.conv(x)
            b, c = x.shape[:2]
            s = nn.functional.hardswish(self.fc2(torch.relu(self.fc1(x.reshape(b, c, -1).mean(dim=2)))))
            x = torch.mul(x, s.view(b, c, 1, 1))
            return self.fc(x.mean(dim=(2, 3)))

    assert extract(SE()).summary().get("cse") == 1


def test_vit_b16_at_224():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16()
    g = extract(model, input_shape=(1, 3, 224, 224))
    assert g.summary() == {"conv": 50, "msa": 12, "sum": 25, "concat": 1, "input": 1, "bias": 50,
                           "ln": 25, "pos_enc": 2}
    names = [n.name for n in g.nodes]
    assert names[:3] == ["input", "conv_proj.weight", "conv_proj.bias"]
    pos = g.nodes[names.index("encoder.pos_embedding")]
    assert pos.op == "pos_enc" and pos.shape == (1, 197, 768)
    assert g.nodes[names.index("class_token")].op == "pos_enc"
    assert g.nodes[-1].name == "heads.head.bias" and g.nodes[-1].role == "classifier_bias"
    assert sorted(p for n in g.nodes for p in n.params) == sorted(n for n, _ in model.named_parameters())
    # msa sits between the packed in-projection and the out-projection
    e = g.edges.tolist()
    cat, add = names.index("CatBackward0"), names.index("encoder.pos_embedding") + 1
    assert sorted(s for s, d in e if d == cat) == [names.index("conv_proj.bias"), names.index("class_token")]
    assert sorted(s for s, d in e if d == add) == [cat, add - 1] and g.nodes[add].op == "sum"
    assert len(e) == 6 + 12 * 15 + 3  # stem, 12 encoder blocks, final ln and head
    k = names.index("encoder.layers.encoder_layer_0.self_attention.in_proj_bias")
    assert g.nodes[k + 1].op == "msa"
    assert [k, k + 1] in g.edges.tolist()
    with pytest.raises(ValueError, match=r"failed on an input of shape \(1, 3, 32, 32\)"):
        extract(model)  # ViT-B/16 only takes 224x224 images


def test_attention_softmax_and_fused_paths_agree():
    class Block(nn.Module):
        def __init__(self, need_weights: bool):
            super().__init__()
            self.need_weights = need_weights
            self.ln = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            s = x.flatten(2).transpose(1, 2)
            h = self.ln(s)
            a, _ = self.attn(h, h, h, need_weights=self.need_weights)
            return self.fc((s + a).mean(1))

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, stride=4)
    graphs = []
    for need in (True, False):
        model = nn.Sequential(conv, Block(need))
        g = extract(model, input_shape=(1, 3, 16, 16))
        graphs.append(([(n.op, n.name if "." in n.name else "") for n in g.nodes], g.edges.tolist()))
        assert g.summary()["msa"] == 1
    assert graphs[0] == graphs[1]


# ----------------------------------------------------------------------------- custom nets
class Mixed(nn.Module):
    """Residual add, concat, depthwise / dilated convs, LayerNorm, no-bias convs,
    BN without affine parameters, avg pooling and a hidden Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.dil = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16, bias=False)
        self.pw = nn.Conv2d(32, 16, 1)
        self.bn_plain = nn.BatchNorm2d(16, affine=False)
        self.ln = nn.LayerNorm(16)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.hidden = nn.Linear(16, 12)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn(self.stem(x))
        y = torch.cat([self.dw(x), self.dil(x)], 1)
        x = x + self.bn_plain(self.pw(F.relu(y)))
        x = self.pool(x)
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x.mean((2, 3), keepdim=True).flatten(1)
        return self.head(F.gelu(self.hidden(x)))


def test_custom_cnn_structure():
    g = extract(Mixed())
    assert g.summary() == {"avg_pool": 1, "sep_conv": 1, "dil_conv": 1, "conv": 4, "sum": 1,
                           "concat": 1, "input": 1, "bias": 3, "bn": 1, "ln": 1, "glob_avg": 1}
    idx = {n.name: i for i, n in enumerate(g.nodes)}
    e = {tuple(x) for x in g.edges.tolist()}
    cat = next(i for i, n in enumerate(g.nodes) if n.op == "concat")
    add = next(i for i, n in enumerate(g.nodes) if n.op == "sum")
    assert (idx["input"], idx["stem.weight"]) in e
    assert (idx["stem.weight"], idx["bn.weight"]) in e
    assert {(idx["bn.weight"], idx["dw.weight"]), (idx["bn.weight"], idx["dil.weight"])} <= e
    assert {(idx["dw.weight"], cat), (idx["dil.weight"], cat), (cat, idx["pw.weight"])} <= e
    # BN without affine parameters has no node: pw's bias feeds the sum directly
    assert (idx["pw.weight"], idx["pw.bias"]) in e and (idx["pw.bias"], add) in e
    assert (idx["bn.weight"], add) in e
    pool = g.nodes[add + 1]
    assert pool.op == "avg_pool" and pool.shape == (1, 1, 3, 3) and (add, add + 1) in e
    assert g.nodes[idx["ln.weight"]].params == ("ln.weight", "ln.bias")
    assert [n.name for n in g.nodes[-4:]] == ["hidden.weight", "hidden.bias", "head.weight", "head.bias"]
    assert [n.role for n in g.nodes[-2:]] == ["classifier_weight", "classifier_bias"]
    assert g.nodes[idx["dil.weight"]].shape == (16, 1, 3, 3)


class OneInput(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.body(self.conv(x))
        return self.fc(y.mean((2, 3))[:, :4])


@pytest.mark.parametrize("body", [
    lambda y: y + 1.0,                    # one input: not a sum
    lambda y: F.relu(y) + y,              # the same node twice: not a sum either (as ppuda)
    lambda y: torch.cat([y, y * 2], 1),   # ditto for concat
    lambda y: torch.cat([y], 1),
])
def test_single_input_sum_and_concat_are_dropped(body):
    g = extract(OneInput(body))
    assert [n.op for n in g.nodes] == ["input", "conv", "bias", "conv", "bias"]
    assert g.edges.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_sum_after_a_dropped_sum_is_kept_as_in_ppuda():
    # ppuda removes one-input sums in one pass and counts the inputs of later sums while the
    # removed ones are still wired in, so this second sum has "2 inputs" and stays
    g = extract(OneInput(lambda y: (lambda z: F.relu(z) + z)(y + 1.0)))
    assert [n.op for n in g.nodes] == ["input", "conv", "bias", "sum", "conv", "bias"]
    assert g.edges.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]


def test_embedding_added_to_the_raw_input():
    class PosFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(1, 3, 8, 8))
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x + self.pos).mean((2, 3)))

    g = extract(PosFirst(), input_shape=(1, 3, 8, 8))
    assert [(n.op, n.name) for n in g.nodes] == [
        ("input", "input"), ("pos_enc", "pos"), ("sum", "AddBackward0"), ("conv", "conv.weight"),
        ("bias", "conv.bias"), ("conv", "fc.weight"), ("bias", "fc.bias")]
    assert g.edges.tolist() == [[0, 2], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]]


def test_tuple_and_dict_outputs_use_the_first_tensor():
    class Tup(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            return self.fc(x.flatten(1)), None  # as ppuda's DARTS Network: (logits, None)

    class Dct(Tup):
        def forward(self, x):
            return {"logits": self.fc(x.flatten(1))}

    for cls in (Tup, Dct):
        g = extract(cls(), input_shape=(1, 3, 4, 4))
        assert [(n.op, n.name) for n in g.nodes] == [("input", "input"), ("conv", "fc.weight"),
                                                      ("bias", "fc.bias")]


def test_frozen_parameters_still_get_nodes():
    model = SmallCNN()
    for p in model.parameters():
        p.requires_grad_(False)
    g = extract(model)
    assert len(g) == 10
    assert not any(p.requires_grad for p in model.parameters())


def test_expected_input_sz_sets_the_tracing_input():
    class Fixed(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.expected_input_sz = size
            self.fc = nn.Linear(3 * 20 * 20, 2)

        def forward(self, x):
            assert x.shape[-2:] == (20, 20), x.shape
            return self.fc(x.flatten(1))

    assert extract(Fixed(20)).input_shape == (1, 3, 20, 20)
    assert extract(Fixed((3, 20, 20))).input_shape == (1, 3, 20, 20)
    for trace in ("auto", "meta", "real"):
        with pytest.raises(ValueError, match=r"failed on an input of shape \(1, 3, 32, 32\)"):
            extract(Fixed(20), input_shape=(1, 3, 32, 32), trace=trace)


def test_auto_trace_falls_back_to_a_real_forward_for_large_inputs():
    class ReadsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x)
            if h.abs().sum() > 0:  # data-dependent: cannot run on the meta device
                h = F.relu(h)
            return self.fc(h.mean((2, 3)))

    g = extract(ReadsValues(), input_shape=(1, 3, 224, 224))  # auto: meta first, then real
    assert [n.op for n in g.nodes] == ["input", "conv", "bias", "conv", "bias"]
    with pytest.raises(ValueError, match="on the meta device"):
        extract(ReadsValues(), trace="meta")


def test_classifier_without_bias_follows_ppuda_flags():
    # ppuda flags the last two nodes; a bias-free classifier weight is the last node and
    # is decoded as an ordinary weight, so no node carries a classifier role here
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2, bias=False))
    g = extract(model)
    assert [n.op for n in g.nodes] == ["input", "conv", "bias", "glob_avg", "conv"]
    assert all(n.role == "" for n in g.nodes)


# ----------------------------------------------------------------------------- search spaces
@pytest.mark.filterwarnings("ignore:.*not used by the forward pass")  # dead ops behind 'none' edges
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nb201_sampled_nets(seed):
    space = search_spaces.get("nb201")
    model = space.build(space.sample(seed), C=8, N=1)
    g = extract(model)
    assert g.nodes[0].op == "input" and g.nodes[-1].name == "classifier.bias"
    assert g.nodes[-1].role == "classifier_bias" and g.nodes[-2].role == "classifier_weight"
    assert (g.edges[:, 0] < g.edges[:, 1]).all()
    assert set(g.summary()) <= {"input", "conv", "bn", "bias", "sum", "avg_pool", "glob_avg"}
    # every parameter the forward pass uses is predicted exactly once
    predicted = [p for n in g.nodes for p in n.params]
    assert len(predicted) == len(set(predicted))
    assert sorted(predicted + list(g.unused_params)) == sorted(n for n, _ in model.named_parameters())


@pytest.mark.parametrize("seed", [0, 1])
def test_darts_sampled_nets(seed):
    space = search_spaces.get("darts")
    model = space.build(space.sample(seed), C=8, layers=5)
    g = extract(model)
    s = g.summary()
    assert s["concat"] >= 5 and s["sum"] >= 5 and s["glob_avg"] == 1
    assert sorted(p for n in g.nodes for p in n.params) == sorted(n for n, _ in model.named_parameters())
    assert (g.edges[:, 0] < g.edges[:, 1]).all()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("layer, kind", [
    (lambda: nn.Conv3d(3, 4, 1), "Conv3d"),
    (lambda: nn.GroupNorm(1, 3), "GroupNorm"),
    (lambda: nn.BatchNorm1d(3), "BatchNorm1d"),
])
def test_unsupported_layers_are_named(layer, kind):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 3, 1), layer())
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            h = self.body[0](x)
            if kind == "Conv3d":
                h = self.body[1](h.unsqueeze(2)).squeeze(2)[:, :3]
            elif kind == "BatchNorm1d":
                h = self.body[1](h.flatten(2)).view_as(h)
            else:
                h = self.body[1](h)
            return self.fc(h.mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match=rf"'body\.1' \({kind}\).*Supported layers"):
        extract(Net())


def test_lstm_and_embedding_are_unsupported():
    class Rnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.rnn = nn.LSTM(4, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h, _ = self.rnn(self.conv(x).flatten(2).transpose(1, 2))
            return self.fc(h[:, -1])

    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.emb((x[:, 0, 0] > 0).long()).view(x.shape[0], -1, 4).mean(1))

    with pytest.raises(UnsupportedModelError, match=r"'rnn' \(LSTM\)"):
        extract(Rnn())
    with pytest.raises(UnsupportedModelError, match=r"'emb' \(Embedding\)"):
        extract(Emb(), input_shape=(1, 3, 4, 4))


def test_bare_parameter_is_unsupported():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.scale = nn.Parameter(torch.ones(4, 1, 1))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc((self.conv(x) * self.scale).mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match=r"'scale'.*Scaled.*bare nn.Parameter"):
        extract(Scaled())

    class Gate(Scaled):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))  # embedding-shaped, but multiplied

    with pytest.raises(UnsupportedModelError, match=r"'scale'.*not added to or concatenated"):
        extract(Gate())


def test_reused_layer_is_unsupported():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(F.relu(self.conv(x))).mean((2, 3)))

    with pytest.raises(UnsupportedModelError, match=r"'conv\.weight'.*used by 2 operations"):
        extract(Twice())


def test_unused_parameters_warn_or_raise():
    class Extra(SmallCNN):
        def __init__(self):
            super().__init__()
            self.aux = nn.Linear(80, 10)  # e.g. an auxiliary head that eval mode skips

    with pytest.warns(UserWarning, match=r"aux\.weight, aux\.bias"):
        g = extract(Extra())
    assert g.unused_params == ("aux.weight", "aux.bias")
    assert len(g) == 10
    with pytest.raises(UnsupportedModelError, match="not used by the forward pass"):
        extract(Extra(), strict=True)


def test_output_without_parameters_is_an_error():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return x.mean((2, 3))

    with pytest.raises(ValueError, match="does not depend on any parameter"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extract(Const())


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        extract(SmallCNN(), input_shape=(0, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown trace mode 'fast'"):
        extract(SmallCNN(), trace="fast")


# ----------------------------------------------------------------------------- Graph API
def test_hop_edges_match_networkx_shortest_paths():
    import networkx as nx

    g = extract(build_fixture_model("resnet18"))
    nxg = g.to_networkx()
    lengths = dict(nx.all_pairs_shortest_path_length(nxg, cutoff=5))
    expected = sorted((s, d, h) for s in lengths for d, h in lengths[s].items() if h > 0)
    assert g.hop_edges(5).tolist() == [list(t) for t in expected]
    real = g.hop_edges(1)
    assert real[:, :2].tolist() == sorted(g.edges.tolist()) and (real[:, 2] == 1).all()


def test_to_networkx_summary_len_and_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")  # no display in tests
    import networkx as nx

    g = extract(Mixed())
    nxg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(nxg)
    assert nxg.number_of_nodes() == len(g) and nxg.number_of_edges() == len(g.edges)
    assert nxg.nodes[0] == {"op": "input", "name": "input", "shape": None}
    assert nxg.nodes[len(g) - 1]["name"] == "head.bias"
    assert sum(g.summary().values()) == len(g)
    assert "Graph(" in repr(g)
    path = tmp_path / "mixed.png"
    ax = g.draw(str(path), labels=True)
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [p for p in PRIMITIVES if p in g.summary()]
    import matplotlib.pyplot as plt

    fig, given = plt.subplots()
    assert g.draw(ax=given) is given and len(given.collections) == len(g.summary())
    plt.close(fig)
    depth = g.depths()
    assert depth[0] == 0 and all(depth[s] < depth[d] for s, d in g.edges)


def test_to_dict_round_trip():
    g = extract(Mixed())
    d = json.loads(json.dumps(g.to_dict()))
    h = Graph.from_dict(d)
    assert [(n.op, n.name, n.shape, n.params, n.role) for n in h.nodes] == \
           [(n.op, n.name, n.shape, n.params, n.role) for n in g.nodes]
    assert np.array_equal(h.edges, g.edges) and h.input_shape == g.input_shape
    d["nodes"][1]["op"] = "conv_9x9"
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        Graph.from_dict(d)


def test_hand_built_graph():
    g = Graph([Node("input", "input"), Node("conv", "w", (4, 3, 3, 3), ("w",)),
               Node("bias", "b", (4,), ("b",))], np.array([[0, 1], [1, 2]]))
    assert len(g) == 3 and g.summary() == {"conv": 1, "input": 1, "bias": 1}
    assert g.hop_edges(50).tolist() == [[0, 1, 1], [0, 2, 2], [1, 2, 1]]
    assert g.nodes[1].type_id == PRIMITIVES.index("conv")


# ----------------------------------------------------------------------------- adjust_net
def test_adjust_net_resnet18_matches_fixture_description():
    model = adjust_net(torchvision.models.resnet18(num_classes=10))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.padding == (1, 1)
    assert model.conv1.stride == (1, 1) and model.conv1.bias is None
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert isinstance(model.maxpool, nn.Identity) and model.expected_input_sz == 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_adjust_net_keeps_the_kernel_centre():
    model = torchvision.models.resnet18(num_classes=10)
    centre = model.conv1.weight.detach()[:, :, 2:5, 2:5].clone()
    adjust_net(model)
    assert torch.equal(model.conv1.weight.detach(), centre)


def test_adjust_net_other_families():
    mb = adjust_net(torchvision.models.mobilenet_v2(num_classes=10))
    strides = [m.stride for m in mb.features[:5].modules() if isinstance(m, nn.Conv2d)]
    assert strides and all(s == (1, 1) for s in strides)
    assert mb(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    large = adjust_net(torchvision.models.resnet18(num_classes=10), large_input=True)
    assert large.expected_input_sz == 224 and large.conv1.kernel_size == (7, 7)
    with pytest.warns(UserWarning, match="does not know Sequential"):
        adjust_net(nn.Sequential(nn.Conv2d(3, 3, 3)))
