"""Unit tests of the GHN-2 model, batched prediction and checkpoint handling."""
from __future__ import annotations

import os
import subprocess
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import ghnas
from ghnas.ghn import (GHN2, GraphBatch, available_ghns, decoder_key, git_blob_sha1, load_ghn, normalize,
                       register_ghn, save_ghn, tile_to)
from ghnas.ghn.model import tile_into
from ghnas.ghn import hub
from ghnas.graph import Graph, Node

SMALL = dict(hid=8, max_shape=(16, 16, 11, 11), num_classes=10)


def small_ghn(seed: int = 0, **kw) -> GHN2:
    torch.manual_seed(seed)
    ghn = GHN2(**{**SMALL, **kw})
    with torch.no_grad():  # no trivial values (LayerNorm weight 1, zero biases)
        for p in ghn.parameters():
            p += 0.1 * torch.randn_like(p)
    return ghn.eval()


def chain_graph(widths=(8, 16), classes=10, pool=True) -> Graph:
    """input -> conv/bn per width -> (max pool) -> glob_avg -> fc; with a residual sum."""
    nodes = [Node("input", "input")]
    edges = []
    c_in, prev = 3, 0
    for i, c in enumerate(widths):
        nodes.append(Node("conv", f"c{i}.weight", (c, c_in, 3, 3), (f"c{i}.weight",)))
        edges.append((prev, len(nodes) - 1))
        nodes.append(Node("bn", f"b{i}.weight", (c,), (f"b{i}.weight", f"b{i}.bias")))
        edges.append((len(nodes) - 2, len(nodes) - 1))
        prev, c_in = len(nodes) - 1, c
    nodes.append(Node("conv", "skip.weight", (c_in, c_in, 1, 1), ("skip.weight",)))
    edges.append((prev, len(nodes) - 1))
    nodes.append(Node("sum", "AddBackward0"))
    edges += [(prev, len(nodes) - 1), (len(nodes) - 2, len(nodes) - 1)]
    prev = len(nodes) - 1
    if pool:
        nodes.append(Node("max_pool", "MaxPool2DWithIndicesBackward0", (1, 1, 3, 3)))
        edges.append((prev, len(nodes) - 1))
        prev = len(nodes) - 1
    nodes.append(Node("glob_avg", "MeanBackward1"))
    edges.append((prev, len(nodes) - 1))
    nodes.append(Node("conv", "fc.weight", (classes, c_in), ("fc.weight",), "classifier_weight"))
    edges.append((len(nodes) - 2, len(nodes) - 1))
    nodes.append(Node("bias", "fc.bias", (classes,), ("fc.bias",), "classifier_bias"))
    edges.append((len(nodes) - 2, len(nodes) - 1))
    return Graph(nodes, np.array(edges, dtype=np.int64))


def random_dag(n: int, rng: np.random.Generator) -> Graph:
    ops = ["conv", "bn", "sum", "concat", "max_pool", "sep_conv"]
    nodes = [Node("input", "input")]
    edges = set()
    for i in range(1, n):
        op = ops[rng.integers(len(ops))]
        shape = {"conv": (int(rng.choice([8, 16, 24])), 8, 3, 3), "sep_conv": (16, 1, 3, 3),
                 "bn": (16,), "max_pool": (1, 1, 3, 3)}.get(op)
        params = (f"p{i}.weight", f"p{i}.bias") if op == "bn" else ((f"p{i}.weight",) if op in ("conv", "sep_conv") else ())
        nodes.append(Node(op, f"n{i}", shape, params))
        for j in rng.choice(i, size=min(i, int(rng.integers(1, 3))), replace=False):
            edges.add((int(j), i))
    return Graph(nodes, np.array(sorted(edges), dtype=np.int64))


class SmallNet(nn.Module):
    """The model that :func:`chain_graph` describes (default widths)."""

    def __init__(self, classes=10, extra=False):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c1, self.b1 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.skip = nn.Conv2d(16, 16, 1, bias=False)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(16, classes)
        if extra:
            self.unused = nn.Linear(3, 3)

    def forward(self, x):
        x = torch.relu(self.b0(self.c0(x)))
        x = torch.relu(self.b1(self.c1(x)))
        x = self.pool(x + self.skip(x))
        return self.fc(x.mean((2, 3)))


# ------------------------------------------------------------------ reference GNN
def sequential_gnn(gnn, x, graph: Graph, cutoff: int) -> torch.Tensor:
    """ppuda's node-by-node sweep (per-edge messages), written plainly for comparison."""
    e = graph.hop_edges(cutoff) if cutoff > 1 else np.concatenate(
        [graph.edges, np.ones((len(graph.edges), 1), np.int64)], 1)
    hx = x.clone()
    n = len(graph.nodes)
    for forward in (True, False):
        for v in (range(n) if forward else reversed(range(n))):
            recv, send = (e[:, 1], e[:, 0]) if forward else (e[:, 0], e[:, 1])
            m = torch.zeros(1, x.shape[1])
            for k in np.flatnonzero(recv == v):
                u, d = int(send[k]), int(e[k, 2])
                if d == 1:
                    m = m + gnn.mlp(hx[u:u + 1])
                if gnn.ve:
                    m = m + gnn.mlp_ve(hx[u:u + 1]) / d
            hx = torch.cat([hx[:v], gnn.gru(m, hx[v:v + 1]), hx[v + 1:]])
    return hx


@pytest.mark.parametrize("cutoff", [1, 3, 50])
def test_generation_sweep_equals_node_by_node_sweep(cutoff):
    rng = np.random.default_rng(cutoff)
    ghn = small_ghn(ve_cutoff=cutoff)
    g = random_dag(25, rng)
    batch = ghn.prepare([g])
    x = torch.randn(len(g.nodes), ghn.hid, requires_grad=True)
    ours = ghn.gnn(x, batch.sweeps)
    ref = sequential_gnn(ghn.gnn, x, g, cutoff)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # gradients w.r.t. the input and the GNN weights agree as well
    w = torch.randn_like(ours)
    gx, gw = torch.autograd.grad((ours * w).sum(), [x, ghn.gnn.gru.weight_hh])
    rx, rw = torch.autograd.grad((ref * w).sum(), [x, ghn.gnn.gru.weight_hh])
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ structure
def test_default_ghn_matches_ppuda_layout():
    ghn = GHN2()
    shapes = {k: tuple(v.shape) for k, v in ghn.state_dict().items()}
    assert len(shapes) == 31
    assert sum(v.numel() for v in ghn.state_dict().values()) == 1_620_764
    assert shapes["embed.weight"] == (15, 32)
    assert shapes["shape_enc.embed_channel.weight"] == (392, 8)
    assert shapes["shape_enc.embed_spatial.weight"] == (9, 8)
    assert shapes["gnn.mlp.fc.0.weight"] == (16, 32) and shapes["gnn.mlp_ve.fc.2.weight"] == (32, 16)
    assert shapes["decoder.fc.0.weight"] == (15488, 32)
    assert shapes["decoder.conv.2.weight"] == (4096, 256, 1, 1)
    assert shapes["decoder.class_layer_predictor.1.weight"] == (10, 64, 1, 1)
    assert shapes["decoder_1d.fc.2.weight"] == (128, 64) and shapes["bias_class.1.weight"] == (10, 64)
    assert ghn.config == {"max_shape": (64, 64, 11, 11), "num_classes": 10, "hypernet": "gatedgnn",
                          "decoder": "conv", "weight_norm": True, "ve": True, "layernorm": True, "hid": 32}
    no_ve = GHN2(ve_cutoff=1)
    assert not hasattr(no_ve.gnn, "mlp_ve") and no_ve.gnn.mlp.fc[0].out_features == 32


@pytest.mark.parametrize("kw, match", [
    (dict(hypernet="transformer"), "unsupported hypernet 'transformer'"),
    (dict(decoder="deconv"), "unsupported decoder 'deconv'"),
    (dict(max_shape=(64, 64, 11)), "max_shape must be 4"),
    (dict(hid=30), "multiple of 4"),
    (dict(ve_cutoff=0), "ve_cutoff"),
])
def test_bad_constructor_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        GHN2(**kw)


def test_shape_encoder_bins():
    enc = GHN2().shape_enc
    assert enc.shape_index((24, 3, 5, 5)) == ((5, 1, 2, 2), True)
    assert enc.shape_index((10, 80)) == ((3, 11, 0, 0), True)
    assert enc.shape_index(None) == ((391, 391, 8, 8), True)
    ind, known = enc.shape_index((1, 1, 2, 2))  # 2x2 pooling is treated as 3x3
    assert not known and enc.describe(ind) == [1, 1, 3, 3]
    ind, known = enc.shape_index((5, 7, 1, 1))  # 4-7 channels count as 8
    assert not known and enc.describe(ind) == [8, 8, 1, 1]
    ind, _ = enc.shape_index((9000, 20, 13, 13))  # beyond the table: largest; else nearest
    assert enc.describe(ind) == [8192, 16, 14, 14]


def test_decoder_keys_follow_ppuda():
    ms = (64, 64, 11, 11)
    assert decoder_key((24, 3, 5, 5), "", ms) == (64, 4, 5, 5)
    assert decoder_key((16, 1, 3, 3), "", ms) == (16, 1, 3, 3)
    assert decoder_key((16, 48, 1, 1), "", ms) == (16, 64, 1, 1)
    assert decoder_key((512, 256, 3, 3), "", ms) == (64, 64, 3, 3)
    assert decoder_key((24,), "", ms) == (64, 0)
    assert decoder_key((10,), "classifier_bias", ms) == (10, -1)
    assert decoder_key((10, 80), "classifier_weight", ms) == (10, 64)
    assert decoder_key((9, 12), "", ms) == (12, 16, 1, 1)
    with pytest.raises(ValueError, match="1-4 dimensions"):
        decoder_key((1, 2, 3, 4, 5), "", ms)


def test_tile_and_normalize():
    w = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(1, 2, 3, 4, 4)
    t = tile_to(w, (5, 2, 3, 3))
    assert t.shape == (1, 5, 2, 3, 3)
    assert torch.equal(t[0, 4], w[0, 0, :2, :3, :3]) and torch.equal(t[0, 3], w[0, 1, :2, :3, :3])
    assert torch.equal(tile_to(w, (2,))[0], w[0, :, 0, 0, 0])
    assert torch.equal(tile_to(w, (2, 7))[0, :, 6], w[0, :, 0, 0, 0])  # 7 mod 3 = 0
    assert tile_to(w[:, :, :, 0, 0], (2, 3, 1, 1)).shape == (1, 2, 3, 1, 1)
    for shape in [(5, 2, 3, 3), (4, 6, 3, 3), (2,), (2, 7), (6, 3, 1, 1)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            dst = torch.empty(shape)
            if len(shape) == 4:
                dst = dst.to(memory_format=fmt)
            tile_into(dst, w[0])
            assert torch.equal(dst, tile_to(w, shape)[0]), shape
    x = torch.randn(3, 8, 4, 3, 3)
    torch.testing.assert_close(normalize(x, "weight", (8, 4, 3, 3)), x * (2 / 36) ** 0.5)
    torch.testing.assert_close(normalize(x, "weight", (8, 1, 3, 3)), x * (1 / 9) ** 0.5)  # depthwise
    torch.testing.assert_close(normalize(x, "weight", (8, 4, 1, 3)), x * (1 / 12) ** 0.5)  # h < w
    torch.testing.assert_close(normalize(x, "norm_weight", (8,)), 2 * torch.sigmoid(x / 2))
    torch.testing.assert_close(normalize(x, "bias", (8,)), torch.tanh(x / 5))


# ------------------------------------------------------------------ prediction
def test_predict_shapes_ranges_and_order():
    ghn = small_ghn()
    g = chain_graph()
    with torch.no_grad():
        pred = ghn.predict(g)[0]
    assert list(pred) == [p for n in g.nodes for p in n.params]
    for n in g.nodes:
        for p in n.params:
            assert tuple(pred[p].shape) == n.shape, p
    assert torch.all((pred["b0.weight"] > 0) & (pred["b0.weight"] < 2))
    assert torch.all(pred["b0.bias"].abs() < 1) and torch.all(pred["fc.bias"].abs() < 1)
    assert not torch.equal(pred["b0.weight"], pred["b0.bias"])
    # the 16x16 skip conv is tiled from the 16x16 corner: no repetition, distinct values
    assert pred["skip.weight"].unique().numel() == pred["skip.weight"].numel()


def test_batched_equals_one_by_one():
    ghn = small_ghn()
    rng = np.random.default_rng(0)
    graphs = [chain_graph(), chain_graph((16, 24, 32)), random_dag(30, rng), chain_graph(pool=False),
              random_dag(12, rng)]
    with torch.no_grad():
        together = ghn.predict(graphs)
        for g, pred in zip(graphs, together):
            alone = ghn.predict([g])[0]
            assert list(alone) == list(pred)
            for k in alone:
                torch.testing.assert_close(pred[k], alone[k], rtol=1e-5, atol=1e-6)


def test_predict_is_differentiable_for_meta_training():
    ghn = small_ghn().train()
    net = SmallNet()
    pred = ghn.predict([chain_graph(), chain_graph()])
    x = torch.randn(4, 3, 16, 16)
    loss = sum(torch.func.functional_call(net, p, (x,)).logsumexp(1).mean() for p in pred)
    loss.backward()
    grads = {k: p.grad for k, p in ghn.named_parameters()}
    for k in ("embed.weight", "gnn.gru.weight_hh", "gnn.mlp_ve.fc.0.weight", "decoder.fc.0.weight",
              "decoder.conv.2.weight", "decoder.class_layer_predictor.1.weight", "decoder_1d.fc.2.weight",
              "bias_class.1.weight", "ln.weight", "shape_enc.embed_channel.weight"):
        assert grads[k] is not None and grads[k].abs().sum() > 0, k
    # the model's own parameters were not touched
    assert all(p.grad is None for p in net.parameters())


def test_predicted_params_drive_functional_call_like_copied_params():
    ghn = small_ghn()
    net = SmallNet().eval()
    with torch.no_grad():
        pred = ghn.predict([chain_graph()])[0]
        x = torch.randn(2, 3, 16, 16)
        out_f = torch.func.functional_call(net, pred, (x,))
        for k, p in net.named_parameters():
            p.copy_(pred[k])
        torch.testing.assert_close(net(x), out_f)


def test_unknown_shape_warns_once_per_shape(monkeypatch):
    from ghnas.ghn import layers

    monkeypatch.setattr(layers, "_WARNED_SHAPES", set())
    ghn = small_ghn()
    g = chain_graph(widths=(5, 16))  # 5 channels were never seen in training
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ghn.prepare([g, g])
        ghn.prepare([g])  # the same shape again: no second warning
    msgs = [str(w.message) for w in rec if "shape encoding has no entry" in str(w.message)]
    assert len(msgs) == 1 and "(5, 3, 3, 3)" in msgs[0] and "(8, 3, 3, 3)" in msgs[0]


def test_errors_name_the_problem():
    ghn = small_ghn()
    with pytest.raises(ValueError, match=r"100 outputs.*10 classes"):
        ghn.predict([chain_graph(classes=100)])
    g = chain_graph()
    g.nodes[3] = Node("conv_9x9", "x")
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        ghn.predict([g])
    bad = Graph(chain_graph().nodes, np.array([[2, 1]]))
    with pytest.raises(ValueError, match="topological"):
        ghn.predict([bad])
    dup = chain_graph()
    dup.nodes[1] = Node("conv", "c0.weight", (8, 3, 3, 3), ("b0.weight",))
    with pytest.raises(ValueError, match="more than one node"):
        ghn.predict([dup])
    with pytest.raises(TypeError, match="nn.Module or a ghnas.graph.Graph"):
        ghn.predict(["resnet"])


def _patch_extract(monkeypatch, graph):
    import ghnas.graph as gmod
    monkeypatch.setattr(gmod, "extract", lambda model, input_shape=None: graph, raising=False)


def test_forward_writes_params_and_sets_bn_like_ppuda(monkeypatch):
    ghn = small_ghn()
    _patch_extract(monkeypatch, chain_graph())
    net = SmallNet().eval()
    with torch.no_grad():
        pred = ghn.predict([chain_graph()])[0]
    out = ghn(net)
    assert out is net
    for k, p in net.named_parameters():
        assert torch.equal(p, pred[k]) and p.requires_grad
    for m in (net.b0, net.b1):
        assert m.training and not m.track_running_stats
    assert not net.training and not net.fc.training  # other modules keep their mode


def test_forward_rejects_unpredicted_or_mismatched_params(monkeypatch):
    ghn = small_ghn()
    _patch_extract(monkeypatch, chain_graph())
    with pytest.raises(ValueError, match=r"not predicted by any graph node: \['unused.weight'"):
        ghn(SmallNet(extra=True))
    g = chain_graph()
    g.nodes[1] = Node("conv", "c0.weight", (8, 3, 5, 5), ("c0.weight",))
    _patch_extract(monkeypatch, g)
    with pytest.raises(ValueError, match=r"'c0.weight' has shape \(8, 3, 3, 3\).*\(8, 3, 5, 5\)"):
        ghn(SmallNet())


def test_mlp_hypernet_and_mlp_decoder_run():
    for kw in (dict(hypernet="mlp"), dict(decoder="mlp", max_shape=(16, 16, 3, 3)), dict(ve_cutoff=1)):
        ghn = small_ghn(**kw)
        with torch.no_grad():
            pred = ghn.predict([chain_graph()])[0]
        assert tuple(pred["c1.weight"].shape) == (16, 8, 3, 3) and tuple(pred["fc.weight"].shape) == (10, 16)
        assert all(torch.isfinite(v).all() for v in pred.values())


def test_graph_batch_reuse():
    ghn = small_ghn()
    batch = ghn.prepare([chain_graph(), chain_graph((8, 8))])
    assert isinstance(batch, GraphBatch) and batch.num_graphs == 2
    with torch.no_grad():
        a = ghn.predict(batch)
        b = ghn.predict([chain_graph(), chain_graph((8, 8))])
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k])


# ------------------------------------------------------------------ checkpoints
def test_save_load_roundtrip_in_ppuda_format(tmp_path):
    ghn = small_ghn()
    path = tmp_path / "sub" / "ghn.pt"
    opt = torch.optim.Adam(ghn.parameters(), lr=1e-3)
    save_ghn(ghn, path, epoch=3, optimizer=opt)
    assert os.listdir(path.parent) == ["ghn.pt"]  # the temp file was renamed away
    ckpt = torch.load(path, weights_only=True)
    assert list(ckpt) == ["state_dict", "optimzer", "epoch", "config"]
    assert ckpt["epoch"] == 3 and ckpt["config"] == ghn.config and "param_groups" in ckpt["optimzer"]
    loaded = load_ghn(path)
    assert not loaded.training and loaded.epoch == 3
    with torch.no_grad():
        a, b = ghn.predict([chain_graph()])[0], loaded.predict([chain_graph()])[0]
    for k in a:
        assert torch.equal(a[k], b[k])


def test_load_accepts_ppuda_config_variants(tmp_path):
    ghn = small_ghn(ve_cutoff=1, layernorm=False)
    path = tmp_path / "g.pt"
    cfg = {"max_shape": [16, 16, 11, 11], "num_classes": 10, "hid": 8}  # ppuda defaults for the rest
    torch.save({"state_dict": {**ghn.state_dict(), "shape_enc.dummy_ind": torch.zeros(1, 4)}, "config": cfg},
               path)
    loaded = load_ghn(path)
    assert loaded.ve_cutoff == 1 and not loaded.layernorm and not loaded.weight_norm


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GHN checkpoint file.*known names: .*ghn2-cifar10"):
        load_ghn(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(ValueError, match="not a readable GHN checkpoint"):
        load_ghn(junk)
    lst = tmp_path / "list.pt"
    torch.save([1, 2, 3], lst)
    with pytest.raises(ValueError, match="expected a dict with 'state_dict' and 'config'"):
        load_ghn(lst)
    ghn = small_ghn()
    sd = ghn.state_dict()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "ln.bias"}, ghn.config, r"missing keys \['ln.bias'\]"),
        "extra": ({**sd, "gnn.extra": torch.zeros(1)}, ghn.config, r"unexpected keys \['gnn.extra'\]"),
        "shape": ({**sd, "embed.weight": torch.zeros(15, 9)}, ghn.config,
                  r"state_dict\['embed.weight'\] has shape \(15, 9\), expected \(15, 8\)"),
        "hypernet": (sd, {**ghn.config, "hypernet": "graphormer"}, "unsupported hypernet 'graphormer'"),
        "key": (sd, {**ghn.config, "heads": 8}, r"unsupported GHN config key\(s\) \['heads'\]"),
    }
    for name, (state, cfg, match) in cases.items():
        p = tmp_path / f"{name}.pt"
        torch.save({"state_dict": state, "optimzer": {}, "epoch": 0, "config": cfg}, p)
        with pytest.raises(ValueError, match=match):
            load_ghn(p)


@pytest.mark.parametrize("cfg, match", [
    ({"hid": 3000}, r"hid=3000 is out of range: valid values are 4..2048"),
    ({"hid": 10**7}, r"hid=10000000 is out of range"),
    ({"hid": float("inf")}, r"hid must be an integer, got inf"),
    ({"hid": True}, r"hid must be an integer"),
    ({"max_shape": [64, 64, 10**6, 10**6]}, r"max_shape\[2\]=1000000 is out of range"),
    ({"max_shape": [10**9, 64, 11, 11]}, r"max_shape\[0\]=1000000000 is out of range"),
    ({"max_shape": "64"}, r"max_shape must be 4 ints"),
    ({"num_classes": 10**9}, r"num_classes=1000000000 is out of range"),
    ({"ve_cutoff": 10**9}, r"ve_cutoff=1000000000 is out of range"),
    # within the bounds, but the (small) state dict does not match: found on the meta device
    ({"hid": 2048, "max_shape": [8192, 8192, 64, 64]}, r"state_dict\['ln.weight'\] has shape \(8,\), "
                                                       r"expected \(2048,\)"),
])
def test_crafted_config_fails_fast_without_allocating(tmp_path, cfg, match):
    """Issue 12: a 234 KB file with hid=3000 took 66 s and 19 GB before failing."""
    ghn = small_ghn()
    p = tmp_path / "crafted.pt"
    torch.save({"state_dict": ghn.state_dict(), "config": {**ghn.config, **cfg}}, p)
    import resource
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = __import__("time").perf_counter()
    with pytest.raises(ValueError, match=match) as err:
        load_ghn(p)
    assert __import__("time").perf_counter() - t0 < 0.5
    assert str(p) in str(err.value) and len(str(err.value)) < 600
    # peak memory of the process grew by well under 100 MB (the full GHN would need GBs)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 100_000


def test_non_finite_weights_are_refused(tmp_path):
    ghn = small_ghn()
    for bad in (float("nan"), float("inf")):
        sd = ghn.state_dict()
        sd["gnn.mlp.fc.0.weight"][0, 0] = bad
        p = tmp_path / "nan.pt"
        torch.save({"state_dict": sd, "config": ghn.config}, p)
        with pytest.raises(ValueError, match=r"tensor 'gnn.mlp.fc.0.weight' holds 1 non-finite value"):
            load_ghn(p)
    sd = {**ghn.state_dict(), "embed.weight": torch.zeros(15, 8, dtype=torch.long)}
    torch.save({"state_dict": sd, "config": ghn.config}, p)
    with pytest.raises(ValueError, match=r"'embed.weight'\] is a torch.strided torch.int64 tensor"):
        load_ghn(p)
    with pytest.raises(ValueError, match="non-finite"):
        hub.check_ghn_weights(ghn.apply(lambda m: m.weight.data.fill_(float("nan"))
                                        if isinstance(m, nn.Embedding) else None))


def test_git_blob_sha1_matches_git(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(1000))
    try:
        expected = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True,
                                  check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        expected = __import__("hashlib").sha1(b"blob 1000\0" + p.read_bytes()).hexdigest()
    assert git_blob_sha1(p) == expected


def test_named_download_cache_and_hash_check(tmp_path, monkeypatch):
    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "_REGISTRY", dict(hub._REGISTRY))
    src = tmp_path / "remote" / "tiny_ghn.pt"
    src.parent.mkdir()
    save_ghn(small_ghn(), src)
    register_ghn("tiny", url=src.as_uri(), git_sha1=git_blob_sha1(src), description="test")
    ghn = ghnas.load_ghn("tiny")
    assert ghn.hid == 8 and (tmp_path / "cache" / "tiny_ghn.pt").exists()
    assert "tiny" in available_ghns() and "ghn2-cifar10" in available_ghns()
    # a cached file is re-checked; a wrong hash fails and leaves nothing in the cache
    bad_src = tmp_path / "remote" / "bad.pt"
    bad_src.write_bytes(src.read_bytes()[:-10])
    register_ghn("bad", url=bad_src.as_uri(), git_sha1=git_blob_sha1(src))
    with pytest.raises(ValueError, match="has git blob SHA-1 .* expected"):
        load_ghn("bad")
    assert sorted(os.listdir(tmp_path / "cache")) == ["tiny_ghn.pt"]
    register_ghn("offline", url=(tmp_path / "nowhere.pt").as_uri(), git_sha1="1" * 40)
    with pytest.raises(RuntimeError, match="could not download GHN 'offline'"):
        load_ghn("offline")
    with pytest.raises(ValueError, match="already registered"):
        register_ghn("tiny", url=src.as_uri(), git_sha1=git_blob_sha1(src))
    with pytest.raises(ValueError, match="exactly one of url= or asset="):
        register_ghn("neither")


def test_released_ghn2_entries():
    reg = hub._REGISTRY
    assert reg["ghn2-cifar10"].url.endswith("/checkpoints/ghn2_cifar10.pt")
    assert reg["ghn2-cifar10"].git_sha1 == "4f290e0fad1b73066eeabb50be52e0c377d0b15b"
    assert reg["ghn2-imagenet"].git_sha1 == "7b5d6733e9fdf0069bc6186cad3a0b1b54fda68d"


def test_asset_entries_resolve_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_REGISTRY", dict(hub._REGISTRY))
    monkeypatch.setattr(hub, "asset_dir", lambda: tmp_path)
    register_ghn("pkg-ghn", asset="pkg_ghn.pt", description="shipped")
    with pytest.raises(FileNotFoundError, match="ghnas/assets/pkg_ghn.pt"):
        load_ghn("pkg-ghn")
    save_ghn(small_ghn(), tmp_path / "pkg_ghn.pt")
    assert load_ghn("pkg-ghn").hid == 8


# ------------------------------------------------------------------ torchvision models, end to end
@pytest.mark.parametrize("arch", ["efficientnet_b0", "shufflenet_v2_x0_5"])  # no ppuda reference for these
def test_torchvision_models_get_every_parameter(arch):
    import torchvision

    from ghnas.nets import adjust_net
    torch.manual_seed(0)
    net = adjust_net(getattr(torchvision.models, arch)(num_classes=10)).eval()
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    ghn = GHN2().eval()  # random weights: this checks coverage and shapes, not quality
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = ghn.predict([net])[0]
    assert list(pred) == list(before)
    assert sum(v.numel() for v in pred.values()) == sum(v.numel() for v in before.values())
    ghn(net)
    assert all(not torch.equal(before[k], p) for k, p in net.named_parameters())
    assert all(m.training and not m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_classifier_size_mismatch_on_a_model():
    import torchvision
    with pytest.raises(ValueError, match=r"'fc.weight'\) has 100 outputs.*10 classes"):
        GHN2()(torchvision.models.resnet18(num_classes=100))


def test_hop_edges_equal_graph_definition():
    from ghnas.ghn.batch import hop_edges
    rng = np.random.default_rng(1)
    for _ in range(10):
        g = random_dag(int(rng.integers(2, 60)), rng)
        for cutoff in (1, 2, 7, 50):
            by_src, by_dst = hop_edges(len(g.nodes), g.edges, cutoff)
            ref = g.hop_edges(cutoff)
            ref = ref[np.lexsort((ref[:, 1], ref[:, 0]))]
            assert np.array_equal(by_src, ref)
            assert np.array_equal(by_dst, ref[np.lexsort((ref[:, 0], ref[:, 1]))])
