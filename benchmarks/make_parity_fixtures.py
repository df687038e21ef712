"""Make GHN-2 parity fixtures for more models by running the reference code (ppuda).

ppuda is not a dependency of ghnas and is not on PyPI: point ``--ppuda`` at a folder
that contains the ``ppuda`` package (this script only imports it). For every model it
follows the procedure of the shared fixtures (``../shared/fixtures/ghn2_parity/README.md``):

1. ``torch.manual_seed(0)``, build the model (torchvision models with ``num_classes=10``
   and ppuda's ``adjust_net`` for 32x32 inputs); ``model.eval()``;
2. ``ghn = GHN.load(ckpt, debug_level=1, device='cpu')``;
3. ``torch.manual_seed(0); model = ghn(model)`` with autograd enabled;
4. logits on ``torch.manual_seed(123); x = torch.randn(4, 3, 32, 32)`` under ``no_grad``:
   first as ``ghn()`` leaves the model (BN with batch statistics), then after ``model.eval()``.

It writes one ``<model>.json`` per model in the schema of the shared fixtures: graph
(nodes and edges in ppuda's order), node embeddings (stats, per-node first 4 values and
L2 norms), statistics and first 8 values of every predicted tensor, input and logits.
The graph, the shape indices and the decoder keys are read from ppuda's own objects
(``Graph``, ``GHN._map_net_params`` on a copy of the model, hooks on the shape
embeddings); nothing of ppuda's logic is re-implemented here.

``--validate DIR`` instead regenerates the public models (small_cnn, resnet18,
darts_c16_l8) and compares them with the fixtures in DIR, printing the largest
differences against the README's tolerances.

Usage::

    python benchmarks/make_parity_fixtures.py --ppuda /tmp/ppuda_ref \\
        --ckpt ../shared/fixtures/ghn2_parity/ghn2_cifar10_seed0.pt \\
        --out tests/fixtures/ghn2_parity_extra
    python benchmarks/make_parity_fixtures.py --ppuda /tmp/ppuda_ref \\
        --ckpt ../shared/fixtures/ghn2_parity/ghn2_cifar10_seed0.pt \\
        --validate ../shared/fixtures/ghn2_parity
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixture_models import SmallCNN  # noqa: E402  (the public fixtures' small_cnn)

PUBLIC = ["small_cnn", "resnet18", "darts_c16_l8"]
EXTRA = ["mobilenet_v2", "resnet50", "vgg11_bn", "mnasnet0_5", "mobilenet_v3_small"]
POOL_ATTRS = ("ceil_mode", "count_include_pad", "divisor_override", "dilation", "kernel_size",
              "padding", "stride")


# ------------------------------------------------------------------ models
def build(name: str) -> tuple[nn.Module, dict]:
    """``(model, description)``; seeds with 0 first, as the reference procedure does."""
    torch.manual_seed(0)
    if name == "small_cnn":
        return SmallCNN(), {"constructor": "SmallCNN of the public fixtures' README"}
    if name == "darts_c16_l8":
        from ppuda.deepnets1m.genotypes import DARTS, to_dict
        from ppuda.deepnets1m.net import Network
        args = dict(C=16, num_classes=10, n_cells=8, ks=3, is_imagenet_input=False, stem_pool=False,
                    stem_type=0, is_vit=None, norm="bn-track", preproc=True, C_mult=2, fc_layers=0,
                    fc_dim=0, glob_avg=True, auxiliary=False, light=False)
        return Network(genotype=DARTS, **args), {
            "constructor": "ppuda.deepnets1m.net.Network(**args) with genotype=DARTS",
            "args": args, "genotype": to_dict(DARTS)}
    import torchvision
    from ppuda.utils import adjust_net
    net = getattr(torchvision.models, name)(num_classes=10)
    adjust_net(net)  # ppuda's 32x32 adjustment (sets expected_input_sz=32)
    return net, {"constructor": f"torchvision.models.{name}(num_classes=10), then "
                                f"ppuda.utils.adjust_net(model) (large_input=False)",
                 "expected_input_sz": 32}


# ------------------------------------------------------------------ helpers
def stats(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {"mean": t.mean().item(), "std": t.std().item(), "abs_sum": t.abs().sum().item(),
            "l2": t.norm().item(), "min": t.min().item(), "max": t.max().item()}


def emb_record(x: torch.Tensor) -> dict:
    return {"shape": list(x.shape), "stats": stats(x), "per_node_first4": x[:, :4].tolist(),
            "per_node_l2": x.double().norm(dim=1).tolist()}


def node_attrs(node: dict, ptype: str) -> dict | None:
    attrs = node["attrs"]
    if not isinstance(attrs, dict) or "size" in attrs:
        return None
    if ptype in ("max_pool", "avg_pool"):
        return {k: v for k, v in attrs.items() if k in POOL_ATTRS}
    if ptype == "glob_avg" and "keepdim" in attrs:
        return {"keepdim": attrs["keepdim"]}
    return None


class ShapeIndexRecorder:
    """Records the 4 shape-embedding indices per node that ppuda's ShapeEncoder looks up."""

    def __init__(self, shape_enc: nn.Module):
        self.calls: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook)
                        for m in (shape_enc.embed_channel, shape_enc.embed_spatial)]

    def _hook(self, module, inputs, output):
        self.calls.append(inputs[0].detach().clone())

    def result(self) -> torch.Tensor:
        for h in self.handles:
            h.remove()
        # ShapeEncoder calls: channel(out), channel(in), spatial(h), spatial(w); hooks fire in call order
        assert len(self.calls) == 4, len(self.calls)
        return torch.stack(self.calls, dim=1)


def run_reference(name: str, ckpt: str) -> dict:
    """Run ppuda on one model following the fixtures' procedure; return the JSON dict."""
    import ppuda
    from ppuda.deepnets1m.genotypes import PRIMITIVES_DEEPNETS1M
    from ppuda.deepnets1m.graph import Graph, GraphBatch
    from ppuda.deepnets1m.ops import NormLayers
    from ppuda.ghn.nn import GHN

    model, desc = build(name)
    model.eval()
    ghn = GHN.load(ckpt, debug_level=1, device="cpu")

    # The graph ghn(model) builds internally, rebuilt with the same code for recording;
    # its node order is deterministic for a given model.
    graph = Graph(model, ve_cutoff=50 if ghn.ve else 1)
    batch = GraphBatch([graph]).to_device("cpu")
    _, params_map = ghn._map_net_params(batch, copy.deepcopy(model), sanity_check=True)

    emb: dict[str, torch.Tensor] = {}
    hooks = [ghn.shape_enc.register_forward_hook(lambda m, i, o: emb.__setitem__("after_shape_enc", o.detach().clone())),
             ghn.gnn.register_forward_hook(lambda m, i, o: emb.__setitem__("after_gnn", o.detach().clone())),
             ghn.ln.register_forward_hook(lambda m, i, o: emb.__setitem__("after_ln", o.detach().clone()))]
    shape_rec = ShapeIndexRecorder(ghn.shape_enc)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = ghn(model)
    t_pred = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    shape_ind = shape_rec.result()

    # ---- graph
    info = {}
    for cell, lst in enumerate(graph.node_info):
        for node_ind, p_name, prim, sz, last_w, last_b in lst:
            info[node_ind] = {"cell": cell, "match_name": p_name, "is_last_weight": bool(last_w),
                              "is_last_bias": bool(last_b)}
    nodes = []
    for i, node in enumerate(graph._nodes):
        tid = int(graph.node_feat[i, 0])
        ptype = PRIMITIVES_DEEPNETS1M[tid]
        shape = graph._param_shapes[i]
        rec = {"idx": i, "name": node["param_name"], "type": ptype, "type_id": tid,
               "shape": [int(s) for s in shape] if shape is not None else None}
        rec.update(info.get(i, {}))
        attrs = node_attrs(node, ptype)
        if attrs is not None:
            rec["attrs"] = attrs
        pm = params_map.get(i)
        rec["decoder_key"] = list(pm[1]) if pm is not None and pm[1] is not None else None
        rec["shape_ind"] = shape_ind[i].tolist()
        nodes.append(rec)
    edges = graph.edges.tolist()

    # ---- which node predicts each parameter
    node_of = {}
    for i, (matched, key, w_ind) in params_map.items():
        if w_ind is None:
            continue
        node_of[matched["param_name"]] = i
        if len(matched["sz"]) == 1 and matched["is_w"] and type(matched["module"]) in NormLayers:
            node_of[matched["param_name"][: -len("weight")] + "bias"] = i
    predicted = []
    for pname, p in model.named_parameters():
        predicted.append({"name": pname, "shape": list(p.shape), "node": node_of[pname], **stats(p),
                          "first8": [float(v) for v in p.detach().flatten()[:8].tolist()]})

    # ---- logits
    torch.manual_seed(123)
    x = torch.randn(4, 3, 32, 32)

    def logits(m):
        with torch.no_grad():
            out = m(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    train_bn = logits(model)
    has_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())
    m_train = copy.deepcopy(model).train()
    train_equal = bool(torch.equal(logits(m_train), train_bn))
    model.eval()
    ev = logits(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    untouched = all(torch.all(m.running_mean == 0) and torch.all(m.running_var == 1) for m in bns)

    n_params = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "meta": {
            "ppuda": getattr(ppuda, "ORACLE_VERSION", "ppuda (unknown version)"),
            "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__,
            "networkx": __import__("networkx").__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "ghn_checkpoint": Path(ckpt).name,
            "model": desc,
            "procedure": "torch.manual_seed(0); build; model.eval(); ghn = GHN.load(ckpt, debug_level=1, "
                         "device='cpu'); torch.manual_seed(0); model = ghn(model) (autograd enabled); "
                         "logits on torch.manual_seed(123); x = torch.randn(4,3,32,32) under no_grad, "
                         "as returned (BN batch stats) and after model.eval()",
            "generator": "benchmarks/make_parity_fixtures.py",
        },
        "num_params": int(n_params),
        "num_param_tensors": len(predicted),
        "graph": {"num_nodes": len(nodes), "num_edges": len(edges),
                  "num_real_edges": sum(e[2] == 1 for e in edges), "n_cells": graph.n_cells,
                  "nodes": nodes, "edges": edges},
        "node_embeddings": {k: emb_record(emb[k]) for k in ("after_shape_enc", "after_gnn", "after_ln")},
        "predicted_params": predicted,
        "input": {"seed": 123, "shape": [4, 3, 32, 32], "first8": x.flatten()[:8].tolist(),
                  "sum": x.double().sum().item()},
        "logits": {"train_bn_batch_stats": train_bn.tolist(), "eval": ev.tolist()},
        "checks": {"model_train_equals_train_bn_batch_stats": train_equal, "has_dropout": has_dropout,
                   "bn_running_stats_untouched_(mean0_var1)": bool(untouched)},
        "time_predict_s": t_pred,
    }


# ------------------------------------------------------------------ validation
def compare(ours: dict, ref: dict) -> dict:
    """Largest differences between a regenerated and a stored fixture (same schema)."""
    out = {"same_graph": ours["graph"] == ref["graph"]}
    rel, absd, f8, f8_viol = 0.0, 0.0, 0.0, 0
    for a, b in zip(ours["predicted_params"], ref["predicted_params"], strict=True):
        assert a["name"] == b["name"] and a["shape"] == b["shape"] and a["node"] == b["node"], (a["name"], b["name"])
        for k in ("std", "abs_sum", "l2"):
            rel = max(rel, abs(a[k] - b[k]) / max(abs(b[k]), 1e-30))
        absd = max(absd, abs(a["mean"] - b["mean"]), abs(a["min"] - b["min"]), abs(a["max"] - b["max"]))
        d = np.abs(np.array(a["first8"]) - np.array(b["first8"]))
        f8 = max(f8, float(d.max()))
        f8_viol += int(np.sum(d > 1e-5 + 1e-4 * np.abs(np.array(b["first8"]))))
    out.update(stats_max_rel_diff=rel, mean_min_max_max_abs_diff=absd, first8_max_abs_diff=f8,
               first8_out_of_tolerance=f8_viol)
    for k in ("train_bn_batch_stats", "eval"):
        a, b = np.array(ours["logits"][k]), np.array(ref["logits"][k])
        out[f"logits_{k}_max_abs_diff"] = float(np.abs(a - b).max())
        out[f"logits_{k}_out_of_tolerance"] = int(np.sum(np.abs(a - b) > 1e-4 + 1e-4 * np.abs(b)))
    emb = 0.0
    for k in ("after_shape_enc", "after_gnn", "after_ln"):
        a = np.array(ours["node_embeddings"][k]["per_node_first4"])
        b = np.array(ref["node_embeddings"][k]["per_node_first4"])
        emb = max(emb, float(np.abs(a - b).max()))
    out["node_embeddings_first4_max_abs_diff"] = emb
    out["checks_equal"] = ours["checks"] == ref["checks"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ppuda", required=True, help="folder containing the ppuda package")
    ap.add_argument("--ckpt", required=True, help="GHN-2 checkpoint in ppuda's format")
    ap.add_argument("--out", default="tests/fixtures/ghn2_parity_extra")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--validate", default=None, help="fixture folder to compare the public models with")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(args.ppuda).resolve()))
    torch.set_num_threads(args.threads)

    if args.validate:
        report = {}
        for name in args.models or PUBLIC:
            ours = run_reference(name, args.ckpt)
            ref = json.loads((Path(args.validate) / f"{name}.json").read_text())
            report[name] = compare(ours, ref)
            print(name, json.dumps(report[name], indent=1), flush=True)
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models or EXTRA:
        d = run_reference(name, args.ckpt)
        path = out / f"{name}.json"
        path.write_text(json.dumps(d))
        print(f"{name}: {d['num_params']} params, {d['num_param_tensors']} tensors, "
              f"{len(d['graph']['nodes'])} nodes, {len(d['graph']['edges'])} edges, "
              f"{path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
