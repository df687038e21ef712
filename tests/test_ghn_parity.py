"""Parity of ghnas's GHN-2 with the reference implementation (ppuda), on the shared fixtures.

The fixtures (../shared/fixtures/ghn2_parity, see its README) hold a GHN-2 checkpoint in
ppuda's format and, for three target models, ppuda's graphs, node embeddings,
statistics of every predicted tensor and the logits of the predicted networks.
Tolerances are the README's: values |a-b| <= 1e-5 + 1e-4|b|; mean/std/abs_sum/l2
relative 1e-4 (mean also absolute 1e-6); logits |a-b| <= 1e-4 + 1e-4|b|.

The same checks run on more torchvision models (tests/fixtures/ghn2_parity_extra, made by
benchmarks/make_parity_fixtures.py with the reference code; see its README). Those JSON
files live in the repository, but the checkpoint they were made with stays in ../shared.
"""
from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import ghnas
from ghnas.ghn import GHN2, decoder_key
from ghnas.graph import Graph, Node

from fixture_models import SmallCNN

PUBLIC_MODELS = ["small_cnn", "resnet18", "darts_c16_l8"]
EXTRA_DIR = Path(__file__).parent / "fixtures" / "ghn2_parity_extra"
EXTRA_MODELS = sorted(p.stem for p in EXTRA_DIR.glob("*.json"))  # torchvision models
MODELS = PUBLIC_MODELS + EXTRA_MODELS


# ------------------------------------------------------------------ fixture helpers
@lru_cache(maxsize=None)
def _json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def fixture(parity_dir: Path, name: str) -> dict:
    """The reference JSON of ``name``: the shared set, or the extra (in-repo) set."""
    folder = EXTRA_DIR if name in EXTRA_MODELS else parity_dir
    return _json(str(folder / f"{name}.json"))


@lru_cache(maxsize=None)
def _ghn(path: str) -> GHN2:
    return ghnas.load_ghn(path)


def ghn_of(parity_dir: Path) -> GHN2:
    return _ghn(str(parity_dir / "ghn2_cifar10_seed0.pt"))


def graph_from_fixture(d: dict) -> Graph:
    """A ghnas Graph with ppuda's nodes (same order) and real edges."""
    nodes = []
    for x in d["graph"]["nodes"]:
        params: tuple[str, ...] = ()
        role = ""
        if x.get("match_name") and x["type"] not in ("max_pool", "avg_pool"):
            name = x["name"]
            params = (name, name[: -len("weight")] + "bias") if x["type"] in ("bn", "ln") else (name,)
            role = ("classifier_weight" if x.get("is_last_weight")
                    else "classifier_bias" if x.get("is_last_bias") else "")
        nodes.append(Node(x["type"], x["name"], tuple(x["shape"]) if x["shape"] else None, params, role))
    e = np.array(d["graph"]["edges"], dtype=np.int64)
    return Graph(nodes, e[e[:, 2] == 1, :2])


def close(a, b, atol, rtol) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) <= atol + rtol * np.abs(b)


def check_stats(t: torch.Tensor, ref: dict, what: str) -> None:
    t = t.detach().double()
    assert list(t.shape) == ref["shape"], what
    got = {"mean": t.mean(), "std": t.std(), "abs_sum": t.abs().sum(), "l2": t.norm(),
           "min": t.min(), "max": t.max()}
    for k, v in got.items():
        atol = 1e-6 if k == "mean" else (1e-5 if k in ("min", "max") else 0.0)
        assert close(v.item(), ref[k], atol, 1e-4), f"{what}: {k} {v.item()} vs ppuda {ref[k]}"
    first8 = t.flatten()[:8].numpy()
    assert np.all(close(first8, ref["first8"], 1e-5, 1e-4)), f"{what}: first8 {first8} vs {ref['first8']}"


def predict_fixture(parity_dir: Path, name: str):
    d = fixture(parity_dir, name)
    ghn = ghn_of(parity_dir)
    g = graph_from_fixture(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2x2 pooling in small_cnn
        batch = ghn.prepare([g])
    with torch.no_grad():
        emb = ghn.embed_nodes(batch, intermediate=True)
        pred = ghn.decode(emb["after_ln"], batch)[0]
    return d, g, batch, emb, pred


# ------------------------------------------------------------------ models


def build_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "small_cnn":
        return SmallCNN()
    if name == "resnet18":
        import torchvision

        from ghnas.nets import adjust_net
        return adjust_net(torchvision.models.resnet18(num_classes=10))
    if name == "darts_c16_l8":
        search_spaces = pytest.importorskip("search_spaces")
        space = search_spaces.get("darts")
        from search_spaces.darts import DARTS_V2
        return space.build(DARTS_V2, C=16, layers=8, num_classes=10)
    if name in EXTRA_MODELS:  # torchvision, adjusted to 32x32 by ghnas (the reference used ppuda's adjust_net)
        import torchvision

        from ghnas.nets import adjust_net
        return adjust_net(getattr(torchvision.models, name)(num_classes=10))
    raise KeyError(name)


def fixture_input(d: dict) -> torch.Tensor:
    torch.manual_seed(d["input"]["seed"])
    x = torch.randn(*d["input"]["shape"])
    assert np.allclose(x.flatten()[:8].numpy(), d["input"]["first8"])
    assert abs(x.double().sum().item() - d["input"]["sum"]) < 1e-3
    return x


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def check_logits(model: nn.Module, d: dict) -> None:
    x = fixture_input(d)
    train_bn = logits_of(model, x)  # as ghn() leaves it: BN uses batch statistics
    ref = d["logits"]["train_bn_batch_stats"]
    assert np.all(close(train_bn.numpy(), ref, 1e-4, 1e-4)), (train_bn, ref)
    model.eval()
    ev = logits_of(model, x)
    assert np.all(close(ev.numpy(), d["logits"]["eval"], 1e-4, 1e-4)), (ev, d["logits"]["eval"])


# ------------------------------------------------------------------ checkpoint
def test_extra_fixtures_are_present():
    # guards the parametrisation: the extra set comes from a glob of EXTRA_DIR
    assert {"mobilenet_v2", "resnet50", "vgg11_bn", "mnasnet0_5", "mobilenet_v3_small"} <= set(EXTRA_MODELS)


def test_checkpoint_loads_strictly_and_matches_summary(parity_dir):
    summary = _json(str(parity_dir / "summary.json"))
    ghn = ghn_of(parity_dir)
    assert not ghn.training
    assert ghn.config == {**summary["config"], "max_shape": tuple(summary["config"]["max_shape"])}
    sd = ghn.state_dict()
    assert list(sd) == [e["key"] for e in summary["state_dict"]]
    assert sum(v.numel() for v in sd.values()) == summary["ghn_params"]
    for e in summary["state_dict"]:
        check_stats(sd[e["key"]], e, e["key"])
    raw = torch.load(parity_dir / "ghn2_cifar10_seed0.pt", weights_only=True)
    assert list(raw) == summary["ckpt_keys"]
    for k, v in raw["state_dict"].items():
        assert torch.equal(sd[k], v), k


def test_seeded_construction_reproduces_the_checkpoint(parity_dir):
    # README: torch.manual_seed(0); GHN(config); p += 0.05 * randn_like(p) in order.
    # Equal tensors prove our modules are built in ppuda's order with its default inits.
    torch.manual_seed(0)
    ghn = GHN2()
    with torch.no_grad():
        for p in ghn.parameters():
            p += 0.05 * torch.randn_like(p)
    ref = ghn_of(parity_dir).state_dict()
    for k, v in ghn.state_dict().items():
        assert torch.equal(v, ref[k]), k


# ------------------------------------------------------------------ per model
@pytest.mark.parametrize("name", MODELS)
def test_graph_encoding_matches_ppuda(parity_dir, name):
    d, g, batch, _, _ = predict_fixture(parity_dir, name)
    ghn = ghn_of(parity_dir)
    nodes = d["graph"]["nodes"]
    assert batch.shape_ind.tolist() == [n["shape_ind"] for n in nodes]
    assert batch.node_types.tolist() == [n["type_id"] for n in nodes]
    for n, node in zip(nodes, g.nodes):
        if n["decoder_key"] is not None:
            assert list(decoder_key(node.shape, node.role, ghn.max_shape)) == n["decoder_key"], n["name"]
    ours = {tuple(e) for e in batch.edges.tolist()}
    assert ours == {tuple(e) for e in d["graph"]["edges"]}


@pytest.mark.parametrize("name", MODELS)
def test_node_embeddings_match_ppuda(parity_dir, name):
    d, _, _, emb, _ = predict_fixture(parity_dir, name)
    for stage, x in emb.items():
        ref = d["node_embeddings"][stage]
        assert list(x.shape) == ref["shape"]
        assert np.all(close(x[:, :4].numpy(), ref["per_node_first4"], 1e-5, 1e-4)), stage
        assert np.all(close(x.norm(dim=1).numpy(), ref["per_node_l2"], 1e-5, 1e-4)), stage


@pytest.mark.parametrize("name", MODELS)
def test_predicted_tensors_match_ppuda(parity_dir, name):
    d, _, _, _, pred = predict_fixture(parity_dir, name)
    assert sorted(pred) == sorted(p["name"] for p in d["predicted_params"])
    assert sum(v.numel() for v in pred.values()) == d["num_params"]
    for ref in d["predicted_params"]:
        check_stats(pred[ref["name"]], ref, f"{name}:{ref['name']}")


def test_small_cnn_every_value_matches_ppuda(parity_dir):
    _, _, _, _, pred = predict_fixture(parity_dir, "small_cnn")
    ref = torch.load(parity_dir / "small_cnn_predicted.pt", weights_only=True)
    for k, v in pred.items():
        assert np.all(close(v.numpy(), ref[k].numpy(), 1e-5, 1e-4)), k


@pytest.mark.parametrize("name", MODELS)
def test_logits_of_predicted_network_match_ppuda(parity_dir, name):
    d, _, _, _, pred = predict_fixture(parity_dir, name)
    model = build_model(name).eval()
    assert [n for n, _ in model.named_parameters()] == [p["name"] for p in d["predicted_params"]]
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(pred[k])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.training, m.track_running_stats = True, False
    check_logits(model, d)


# ------------------------------------------------------------------ end to end (graph extraction)
def same_graph(ours: Graph, ref: dict) -> None:
    """Equal up to node re-indexing: nodes by (name, type, shape), edges by node names."""
    rn = ref["graph"]["nodes"]
    key = lambda name, op, shape: (name, op, tuple(shape) if shape else None)  # noqa: E731
    assert sorted(map(str, (key(n.name, n.op, n.shape) for n in ours.nodes))) == \
        sorted(map(str, (key(n["name"], n["type"], n["shape"]) for n in rn)))
    names_ours = [n.name for n in ours.nodes]
    names_ref = [n["name"] for n in rn]
    if len(set(names_ref)) == len(names_ref):  # op names repeat in bigger nets; compare edges only when unique
        e_ours = {(names_ours[s], names_ours[t]) for s, t in np.asarray(ours.edges).tolist()}
        e_ref = {(names_ref[s], names_ref[t]) for s, t, h in ref["graph"]["edges"] if h == 1}
        assert e_ours == e_ref


@pytest.mark.parametrize("name", MODELS)
def test_end_to_end_ghn_call_matches_ppuda(parity_dir, name):
    d = fixture(parity_dir, name)
    ghn = ghn_of(parity_dir)
    model = build_model(name).eval()
    from ghnas.graph import extract
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same_graph(extract(model), d)
        model = ghn(model)
    params = dict(model.named_parameters())
    assert list(params) == [p["name"] for p in d["predicted_params"]]
    for ref in d["predicted_params"]:
        check_stats(params[ref["name"]], ref, f"{name}:{ref['name']}")
    check_logits(model, d)
