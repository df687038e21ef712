"""DARTS space: genotype strings, random moves, hashing, encoding, and the builder's
parity with GHN-2's reference network (ppuda ``Network``)."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch

import search_spaces
from search_spaces import InvalidArchitecture
from search_spaces.darts import (DARTS, DARTS_V1, DARTS_V2, OPS, PC_DARTS, PDARTS, DartsSpace,
                                 Genotype, named)




@pytest.fixture(scope="module")
def space() -> DartsSpace:
    return search_spaces.get("darts")


def n_params(model: torch.nn.Module, skip: str = "\0") -> int:
    return sum(p.numel() for n, p in model.named_parameters() if skip not in n)


# ----------------------------------------------------------------------------- strings
def test_named_genotypes(space):
    names = named()
    assert {"DARTS_V1", "DARTS_V2", "DARTS", "PC_DARTS", "PDARTS"} <= set(names)
    assert DARTS == DARTS_V2 == names["DARTS_V2"]
    for name, arch in names.items():
        assert space.validate(name) == arch
        assert space.validate(name.lower()) == arch
        assert space.validate(arch) == arch
    assert space.validate("pc-darts") == PC_DARTS
    g = space.parse("DARTS_V2")
    assert isinstance(g, Genotype)
    assert g.normal[7] == ("dil_conv_3x3", 2) and g.reduce[0] == ("max_pool_3x3", 0)
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert DARTS_V1 != DARTS_V2 != PC_DARTS != PDARTS


def test_canonical_format(space):
    assert DARTS_V2 == (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
        "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
    g = space.parse(DARTS_V2)
    assert space.format(g) == DARTS_V2
    assert space.format(g._asdict()) == DARTS_V2


def test_lenient_parse(space):
    g = space.parse(DARTS_V2)
    variants = [
        DARTS_V2.replace("'", '"'),
        "  \n" + DARTS_V2.replace(", ", ",\n     ") + "\n",
        DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)"),
        "genotypes." + DARTS_V2,
        DARTS_V2.replace("[(", "((").replace(")]", "))"),  # tuples instead of lists
        "Genotype(%r, [2,3,4,5], %r, [2,3,4,5])" % ([list(p) for p in g.normal], list(g.reduce)),
        json.dumps({"normal": g.normal, "normal_concat": [2, 3, 4, 5],
                    "reduce": g.reduce, "reduce_concat": [2, 3, 4, 5]}),
    ]
    for text in variants:
        assert space.validate(text) == DARTS_V2, text


def test_format_accepts_foreign_namedtuples(space):
    from collections import namedtuple
    G = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    g = space.parse(PC_DARTS)
    foreign = G([list(p) for p in g.normal], range(2, 6), list(g.reduce), range(2, 6))
    assert space.format(foreign) == PC_DARTS
    g2 = g._replace(normal=tuple((op, np.int64(j)) for op, j in g.normal))
    assert space.format(g2) == PC_DARTS


def _edit(arch: str, old: str, new: str, count: int = 1) -> str:
    assert old in arch
    return arch.replace(old, new, count)


MALFORMED = [
    ("", "cannot parse"),
    ("garbage", "unknown genotype name 'garbage'; known names: DARTS_V1"),
    ("Genotype(", "cannot parse"),
    ("[1, 2, 3]", "not a DARTS genotype"),
    ("__import__('os').system('echo pwned')", "not a DARTS genotype"),
    (_edit(DARTS_V2, "'dil_conv_3x3', 2", "'conv_9x9', 2"), "unknown op 'conv_9x9' in normal pair 7; valid ops: max_pool_3x3"),
    (_edit(DARTS_V2, "'dil_conv_3x3', 2", "'none', 2"), "unknown op 'none'"),
    (_edit(DARTS_V2, "('max_pool_3x3', 0)", "('max_pool_3x3', 2)"), "bad input 2 in reduce pair 0"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 3 may use inputs 0, 1, 2, 3, 4"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', -1)"), "bad input -1"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', '2')"), "bad input '2'"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', 2.0)"), "bad input 2.0"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', True)"), "bad input True"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "normal node 3 (pairs 6, 7) uses input 0 twice"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3',)"), "normal pair 7 must be (op, input)"),
    (_edit(DARTS_V2, ", ('dil_conv_3x3', 2)", ""), "normal has 7 pairs; it needs 8"),
    (_edit(DARTS_V2, "('dil_conv_3x3', 2)", "('dil_conv_3x3', 2), ('skip_connect', 3)"), "normal has 9 pairs"),
    (_edit(DARTS_V2, "normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"), "normal_concat must be [2, 3, 4, 5]"),
    (_edit(DARTS_V2, "reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4, 6]"), "reduce_concat must be [2, 3, 4, 5]"),
    (_edit(DARTS_V2, "reduce_concat=[2, 3, 4, 5]", "reduce_concat=7"), "reduce_concat must be"),
    (_edit(DARTS_V2, ", reduce_concat=[2, 3, 4, 5]", ""), "missing field(s) reduce_concat"),
    (_edit(DARTS_V2, "reduce_concat=", "reduction_concat="), "unknown Genotype field 'reduction_concat'"),
    (_edit(DARTS_V2, "reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4, 5], normal=[]"), "given twice"),
    (_edit(DARTS_V2, "normal=", "normal=x + "), "normal must be a literal"),
    (_edit(DARTS_V2, "Genotype(", "Genome("), "not a DARTS genotype"),
    (_edit(DARTS_V2, "reduce_concat=[2, 3, 4, 5]", "reduce_concat=range('a')"), "range() takes"),
    ("{'normal': [], 'foo': 1}", "unknown genotype field(s) ['foo']"),
]


@pytest.mark.parametrize("bad, needle", MALFORMED)
def test_malformed_genotypes(space, bad, needle):
    with pytest.raises(InvalidArchitecture) as err:
        space.validate(bad)
    assert needle in str(err.value)
    assert bad not in space


@pytest.mark.parametrize("bad", [
    "+".join(["1"] * 3000),           # RecursionError in Python's parser before
    "-" * 6000 + "1",                 # MemoryError before
    "[" * 3000 + "]" * 3000,
    "Genotype(normal=" + "(" * 500 + ")" * 500 + ")",
    "x" * 10_000_000,                 # 10 MB: echoed whole before (20 MB of stderr)
    DARTS_V2.replace("normal=", "normal=" + "-" * 4000),
    DARTS_V2.replace("'dil_conv_3x3', 2", "'" + "a" * 8000 + "', 2"),
    "[1+]", "Genotype(normal=)", "{'normal' = 1}", "9" * 5000, "'\\N{nope}'",
])
def test_hostile_genotypes_fail_fast_and_briefly(space, bad):
    with pytest.raises(InvalidArchitecture) as err:
        space.parse(bad)
    assert len(str(err.value)) < 500
    assert (bad in space) is False


def test_length_cap(space):
    from search_spaces.base import MAX_ARCH_LENGTH
    padded = DARTS_V2.replace(", ", "," + " " * 100)  # long but valid
    assert len(padded) < MAX_ARCH_LENGTH and space.validate(padded) == DARTS_V2
    with pytest.raises(InvalidArchitecture, match=f"the limit is {MAX_ARCH_LENGTH}"):
        space.parse(DARTS_V2 + " " * MAX_ARCH_LENGTH)


def test_non_string_inputs(space):
    with pytest.raises(InvalidArchitecture, match="must be a str"):
        space.parse(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArchitecture, match="cannot read a DARTS genotype"):
        space.format(42)


# ----------------------------------------------------------------------------- random moves
def test_sampling(space):
    a = space.sample_many(30, seed=11)
    assert a == space.sample_many(30, seed=11) and a != space.sample_many(30, seed=12)
    assert space.sample(5) == space.sample(np.random.default_rng(5))
    assert all(space.validate(x) == x for x in a)
    assert len(set(a)) == 30


def test_sampling_is_uniform(space):
    genos = [space.parse(a) for a in space.sample_many(3000, seed=0)]
    ops = Counter(op for g in genos for op, _ in g.normal + g.reduce)
    assert all(abs(ops[o] / (3000 * 16) - 1 / 7) < 0.01 for o in OPS)
    # node 3 chooses an ordered pair of distinct inputs from 5: 20 pairs
    pairs = Counter((g.normal[6][1], g.normal[7][1]) for g in genos)
    assert len(pairs) == 20 and max(pairs.values()) / min(pairs.values()) < 1.6


def test_mutate(space):
    rng = np.random.default_rng(0)
    for arch in [DARTS_V2, PC_DARTS] + space.sample_many(30, seed=3):
        child = space.mutate(arch, rng)
        assert child != arch and space.validate(child) == child
        assert space.distance(arch, child) == 1
        assert space.hash(child) != space.hash(arch)
    nbrs = space.neighbours(DARTS_V2)
    assert len(nbrs) == len(set(nbrs)) == 16 * 6 + 2 * 2 * (1 + 2 + 3)
    assert space.mutate(DARTS_V2, 4) == space.mutate(DARTS_V2, 4)
    assert space.distance(DARTS_V2, DARTS_V2) == 0
    assert space.distance(DARTS_V1, DARTS_V2) > 1


# ----------------------------------------------------------------------------- hashing
def test_hash_treats_node_inputs_as_unordered(space):
    g = space.parse(DARTS_V2)
    normal = list(g.normal)
    normal[4], normal[5] = normal[5], normal[4]  # ('sep_conv_3x3', 1), ('skip_connect', 0) swapped
    swapped = space.format(g._replace(normal=tuple(normal)))
    assert swapped != DARTS_V2
    assert space.hash(swapped) == space.hash(DARTS_V2)
    assert space.canonical(swapped) == space.canonical(DARTS_V2)
    assert space.canonical(space.canonical(DARTS_V2)) == space.canonical(DARTS_V2)
    assert len({space.hash(a) for a in named().values()}) == 4  # DARTS and PC_DARTS_CIFAR are aliases
    assert len(space.hash(DARTS_V2)) == 32


def test_swapped_inputs_build_the_same_function(space):
    g = space.parse(DARTS_V2)
    normal = list(g.normal)
    normal[4], normal[5] = normal[5], normal[4]
    swapped = space.format(g._replace(normal=tuple(normal)))
    torch.manual_seed(0)
    a = space.build(DARTS_V2, C=4, layers=3).eval()
    b = space.build(swapped, C=4, layers=3).eval()
    sd = {}
    for k, v in a.state_dict().items():
        if "._ops.4." in k and ".cells.1." not in "." + k:  # normal cells: 0 and 2
            k = k.replace("._ops.4.", "._ops.5.")
        sd[k] = v
    b.load_state_dict(sd)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x))


# ----------------------------------------------------------------------------- vectors
def test_encoding(space):
    choices = space.encoding_choices
    assert len(choices) == 32
    assert choices[:16] == [7, 2, 7, 1, 7, 3, 7, 2, 7, 4, 7, 3, 7, 5, 7, 4] == choices[16:]
    v = space.encode(DARTS_V2)
    assert v.dtype == np.int64 and v.shape == (32,)
    # normal node 2: ('sep_conv_3x3', 1), ('skip_connect', 0) -> second input 0 has rank 0
    assert v[8:12].tolist() == [OPS.index("sep_conv_3x3"), 1, OPS.index("skip_connect"), 0]
    for arch in list(named().values()) + space.sample_many(50, seed=5):
        assert space.decode(space.encode(arch)) == space.validate(arch)
    # every vector within the choices is a valid architecture
    rng = np.random.default_rng(0)
    for _ in range(200):
        vec = [int(rng.integers(c)) for c in choices]
        arch = space.decode(vec)
        assert space.encode(arch).tolist() == vec
    with pytest.raises(InvalidArchitecture, match="position 3 is 1; valid values are 0..0"):
        space.decode([0, 0, 0, 1] + [0] * 28)
    with pytest.raises(InvalidArchitecture, match=r"shape \(32,\)"):
        space.decode([0] * 31)


# ----------------------------------------------------------------------------- builder
def test_parity_param_names_shapes(space, parity_dir):
    ref = json.loads((parity_dir / "darts_c16_l8.json").read_text())
    assert ref["meta"]["model"]["args"]["C"] == 16 and ref["meta"]["model"]["args"]["n_cells"] == 8
    ref_geno = ref["meta"]["model"]["genotype"]
    assert space.format(ref_geno) == DARTS_V2
    model = space.build(DARTS_V2, C=16, layers=8, num_classes=10)
    ours = [(n, list(p.shape)) for n, p in model.named_parameters()]
    theirs = [(p["name"], p["shape"]) for p in ref["predicted_params"]]
    assert ours == theirs
    assert n_params(model) == ref["num_params"] == 246106
    assert len(ours) == ref["num_param_tensors"] == 319


# --- data flow: trace our autograd graph the way ppuda does and compare with the fixture
_KINDS = {"AddBackward0": "sum", "CatBackward0": "concat", "MaxPool2DWithIndicesBackward0": "max_pool",
          "AvgPool2DBackward0": "avg_pool", "MeanBackward1": "glob_avg"}


def _trace(model: torch.nn.Module) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Nodes {id: kind-or-param-name} and real edges, ppuda-style: parameterised ops become
    their weight's node (a Linear also gets a bias node), sums/concats/pools/mean stay,
    everything else (ReLU, slicing, reshapes) is removed and its edges rewired."""
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    pname = {id(p): n for n, p in model.named_parameters()}
    out = model(x)

    def param_children(fn) -> list[str]:
        names = []
        for nf, _ in fn.next_functions:
            if nf is None:
                continue
            leaf = nf
            if type(nf).__name__ in ("TBackward0", "PermuteBackward0"):
                leaf = nf.next_functions[0][0]
            if type(leaf).__name__ == "AccumulateGrad" and id(leaf.variable) in pname:
                names.append(pname[id(leaf.variable)])
        return names

    def ends(fn) -> tuple[str, str] | None:
        if type(fn).__name__ in ("TBackward0", "PermuteBackward0"):  # part of a Linear
            return None
        names = param_children(fn)
        weights = [n for n in names if n.endswith(".weight")]
        if weights:
            biases = [n for n in names if n.endswith(".bias")]
            if "BatchNorm" in type(fn).__name__ or not biases:
                return weights[0], weights[0]
            return weights[0], biases[0]
        if type(fn).__name__ in _KINDS:
            return f"{_KINDS[type(fn).__name__]}@{id(fn)}", f"{_KINDS[type(fn).__name__]}@{id(fn)}"
        return None

    nodes: dict[str, str] = {"input": "input"}
    edges: set[tuple[str, str]] = set()
    memo: dict[int, set[str]] = {}

    def preds(fn) -> set[str]:
        if id(fn) in memo:
            return memo[id(fn)]
        found: set[str] = set()
        for nf, _ in fn.next_functions:
            if nf is None:
                continue
            if type(nf).__name__ == "AccumulateGrad":
                if nf.variable is x:
                    found.add("input")
                continue
            e = ends(nf)
            if e is not None:
                visit(nf)
                found.add(e[1])
            else:
                found |= preds(nf)
        memo[id(fn)] = found
        return found

    visited: set[int] = set()

    def visit(fn) -> None:
        if id(fn) in visited:
            return
        visited.add(id(fn))
        first, last = ends(fn)
        for name in {first, last}:
            nodes[name] = name.split("@")[0] if "@" in name else "param"
        if first != last:
            edges.add((first, last))
        for p in preds(fn):
            edges.add((p, first))

    visit(out.grad_fn)
    return nodes, edges


def _canonical_edges(nodes: dict[str, str], edges: set[tuple[str, str]]) -> Counter:
    """Name unnamed nodes (sum, concat, pools) by their kind and inputs, recursively."""
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        preds[d].append(s)
    label: dict[str, str] = {}

    def lab(n: str) -> str:
        if n not in label:
            if nodes[n] in ("param", "input"):
                label[n] = n
            else:
                inner = ",".join(sorted(lab(p) for p in preds[n]))
                label[n] = nodes[n] + ":" + hashlib.sha1(inner.encode()).hexdigest()[:12]
        return label[n]

    return Counter((lab(s), lab(d)) for s, d in edges)


def test_parity_data_flow(space, parity_dir):
    ref = json.loads((parity_dir / "darts_c16_l8.json").read_text())
    ref_nodes, ref_edges = {}, set()
    for n in ref["graph"]["nodes"]:
        is_param = n["type"] in ("conv", "bn", "sep_conv", "dil_conv", "bias")
        ref_nodes[str(n["idx"])] = "param" if is_param else n["type"]
    names = {str(n["idx"]): n["name"] for n in ref["graph"]["nodes"]}
    rename = {k: (names[k] if v == "param" else ("input" if v == "input" else k)) for k, v in ref_nodes.items()}
    ref_nodes = {rename[k]: v for k, v in ref_nodes.items()}
    for s, d, hops in ref["graph"]["edges"]:
        if hops == 1:
            ref_edges.add((rename[str(s)], rename[str(d)]))
    assert len(ref_edges) == ref["graph"]["num_real_edges"] == 347

    torch.manual_seed(0)
    model = space.build(DARTS_V2, C=16, layers=8).eval()
    our_nodes, our_edges = _trace(model)
    assert Counter(our_nodes.values()) == Counter(ref_nodes.values())
    assert _canonical_edges(our_nodes, our_edges) == _canonical_edges(ref_nodes, ref_edges)


def test_published_param_counts(space):
    # DARTS' own log for its CIFAR-10 model (C=36, 20 cells): "param size = 3.349342MB"
    model = space.build(DARTS_V2, C=36, layers=20, auxiliary=True)
    assert n_params(model, skip="auxiliary") == 3349342
    assert round(n_params(space.build(PC_DARTS, C=36, layers=20)) / 1e6, 2) == 3.63  # PC-DARTS paper: 3.6M
    assert round(n_params(space.build(PDARTS, C=36, layers=20)) / 1e6, 1) == 3.4  # P-DARTS paper: 3.4M


@pytest.mark.parametrize("arch", [PC_DARTS, PDARTS, DARTS_V1] + DartsSpace().sample_many(3, seed=7))
def test_forward_small(space, arch):
    torch.manual_seed(0)
    model = space.build(arch, C=8, layers=5, num_classes=3)
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_auxiliary_and_drop_path(space):
    torch.manual_seed(0)
    model = space.build(DARTS_V2, C=8, layers=5, num_classes=4, auxiliary=True, drop_path_prob=0.5)
    assert [n for n, _ in model.named_parameters()][-2:] == ["classifier.0.weight", "classifier.0.bias"]
    assert any(n.startswith("auxiliary_head.") for n, _ in model.named_parameters())
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 4)
    (logits.sum() + 0.4 * aux.sum()).backward()
    # drop-path is random in training ...
    torch.manual_seed(1)
    a = model(x)[0]
    torch.manual_seed(2)
    b = model(x)[0]
    assert not torch.allclose(a, b)
    torch.manual_seed(1)
    assert torch.equal(a, model(x)[0])
    # ... and off in eval mode, where the auxiliary head is skipped too
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
        assert torch.equal(out, model(x))


def test_drop_path_statistics():
    from search_spaces.darts import drop_path
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 1, 1)
    y = drop_path(x, 0.3)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.02
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))


def test_build_bad_args(space):
    with pytest.raises(ValueError, match="drop_path_prob"):
        space.build(DARTS_V2, drop_path_prob=1.0)
    with pytest.raises(ValueError, match="layers >= 1"):
        space.build(DARTS_V2, layers=0)
    with pytest.raises(InvalidArchitecture):
        space.build("not a genotype")
    # odd C works: every FactorizedReduce sits after a doubling of the channels
    assert space.build(DARTS_V2, C=3, layers=3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
