"""NAS-Bench-201 space: string format, random moves, hashing, encoding, builder."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import search_spaces
from search_spaces import InvalidArchitecture
from search_spaces.nb201 import EDGES, OPS, NB201Space

EXAMPLE = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
           "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")

# Rows of cifar10_dev.csv whose `params_m` disagrees with their own `naslib_params`
# column. These `params_m` values are odd counts (e.g. 478,373), which no NAS-Bench-201
# network can have (every parameter tensor of it has an even number of entries), so the
# data is wrong there; our counts equal `naslib_params` for these rows as for all others.
BAD_PARAMS_M_ROWS = {
    "|none~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|none~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|skip_connect~1|none~2|",
    "|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|none~2|",
}




@pytest.fixture(scope="module")
def space() -> NB201Space:
    return search_spaces.get("nb201")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_to_csv_precision(count: int, text: str) -> bool:
    """The CSV writes millions with 6 significant digits (e.g. 1.04547 for 1,045,466)."""
    return float(f"{count / 1e6:.6g}") == float(text)


# ----------------------------------------------------------------------------- strings
def test_round_trip_and_structure(space):
    assert space.validate(EXAMPLE) == EXAMPLE
    struct = space.parse(EXAMPLE)
    assert struct == ((("nor_conv_3x3", 0),),
                      (("nor_conv_3x3", 0), ("avg_pool_3x3", 1)),
                      (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2)))
    assert space.format(struct) == EXAMPLE
    flat = ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]
    assert space.format(flat) == EXAMPLE


def test_lenient_parse_canonicalises(space):
    messy = ("  |nor_conv_3x3~0|+| avg_pool_3x3~1 |nor_conv_3x3~0|"
             "+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|\n")
    assert space.validate(messy) == EXAMPLE


@pytest.mark.parametrize("bad, needle", [
    ("", "start and end with '|'"),
    ("garbage", "start and end with '|'"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "needs 3"),
    (EXAMPLE + "+|none~0|none~1|none~2|none~3|", "needs 3"),
    (EXAMPLE.replace("avg_pool_3x3", "conv_9x9"), "unknown op 'conv_9x9'"),
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "valid ops: none, skip_connect"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~2"), "node 2 takes inputs from nodes 0, 1"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~x"), "bad input node 'x'"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~-1"), "bad input node '-1'"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3"), "must be 'op~j'"),
    (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~0"), "two edges from node 0"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "no edge from node(s) 1"),
    ("|nor_conv_3x3~0|+||+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2"),
])
def test_malformed_strings(space, bad, needle):
    with pytest.raises(InvalidArchitecture) as err:
        space.validate(bad)
    assert needle in str(err.value)
    assert isinstance(err.value, ValueError)
    assert bad not in space


def test_hostile_strings_are_short_invalid_architectures(space):
    # issue 12: a unicode digit gave a bare int() error; huge inputs were echoed whole
    with pytest.raises(InvalidArchitecture, match="bad input node '²'"):
        space.parse(EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~²"))
    assert EXAMPLE.replace("~0", "~٠") not in space  # Arabic-Indic zero
    for bad in ("+".join(["1"] * 3000), "x" * 10_000_000, "|" + "none~0|" * 5000,
                EXAMPLE.replace("~1", "~" + "1" * 5000)):
        with pytest.raises(InvalidArchitecture) as err:
            space.parse(bad)
        assert len(str(err.value)) < 400
        assert bad not in space


def test_non_string_rejected(space):
    with pytest.raises(InvalidArchitecture, match="must be a str"):
        space.parse(123)  # type: ignore[arg-type]
    assert 123 not in space


def test_enumerate_is_the_whole_space(space):
    archs = list(space.enumerate())
    assert len(archs) == 15625 == len(space) == len(set(archs))
    assert archs[0] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert all(archs[k] == space.decode(space.encode(archs[k])) for k in range(0, 15625, 97))


# ----------------------------------------------------------------------------- random moves
def test_sampling_is_seeded_and_valid(space):
    a = space.sample_many(20, seed=3)
    assert a == space.sample_many(20, seed=3)
    assert a != space.sample_many(20, seed=4)
    assert space.sample(7) == space.sample(np.random.default_rng(7))
    assert all(space.validate(x) == x for x in a)


def test_sampling_is_uniform_per_edge(space):
    enc = np.stack([space.encode(a) for a in space.sample_many(5000, seed=0)])
    freq = np.stack([np.bincount(enc[:, e], minlength=5) / len(enc) for e in range(6)])
    assert np.all(np.abs(freq - 0.2) < 0.03)


def test_sample_many_unique(space):
    archs = space.sample_many(300, seed=1, unique=True)
    assert len({space.hash(a) for a in archs}) == 300


def test_mutate_single_edit(space):
    rng = np.random.default_rng(0)
    for arch in space.sample_many(50, seed=2):
        child = space.mutate(arch, rng)
        assert child != arch and space.validate(child) == child
        assert space.distance(arch, child) == 1
    assert space.mutate(EXAMPLE, 5) == space.mutate(EXAMPLE, 5)
    nbrs = space.neighbours(EXAMPLE)
    assert len(nbrs) == len(set(nbrs)) == 24


# ----------------------------------------------------------------------------- hashing
def test_hash_merges_dead_edges(space):
    # node 1 has no live input, so every edge leaving node 1 is irrelevant
    a = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    b = "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    assert space.hash(a) == space.hash(b)
    # node 1 feeds nowhere, so the edge into it is irrelevant
    c = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
    d = "|skip_connect~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
    assert space.hash(c) == space.hash(d)
    # but a live edge always matters
    e = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert space.hash(c) != space.hash(e)


def test_hash_symmetry_of_nodes_1_and_2(space):
    a = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"
    b = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
    assert space.hash(a) == space.hash(b)
    assert space.canonical(a) == space.canonical(b)
    # with a live edge 1->2 the nodes are not interchangeable
    a2 = a.replace("none~1", "skip_connect~1")
    b2 = b.replace("none~1", "skip_connect~1")
    assert space.hash(a2) != space.hash(b2)


def test_canonical_is_idempotent_and_class_count(space):
    reps = {space.canonical(a) for a in space.enumerate()}
    assert all(space.canonical(r) == r for r in list(reps)[:500])
    assert len(reps) == 8765
    assert space.canonical("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|") \
        == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_hash_equivalence_is_functional(space):
    """Equivalent cells compute the same function once weights are matched up."""
    a = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"
    b = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
    torch.manual_seed(0)
    ma, mb = space.build(a, C=4, N=1).eval(), space.build(b, C=4, N=1).eval()
    sa = ma.state_dict()
    # the edge numbers swap with the node labels: 0<->1 and 4<->5 in `layers`
    swap = {"layers.0.": "layers.1.", "layers.1.": "layers.0.",
            "layers.4.": "layers.5.", "layers.5.": "layers.4."}
    sb = {}
    for k, v in sa.items():
        for old, new in swap.items():
            if old in k:
                k = k.replace(old, new)
                break
        sb[k] = v
    mb.load_state_dict(sb)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ma(x), mb(x))


def test_benchmark_equivalence_has_the_benchmarks_6466_classes(space):
    """NAS-Bench-201 counts 6,466 unique cells up to isomorphism; ghnas' default: 8,765."""
    archs = list(space.enumerate())
    assert len({space.hash(a, equivalence="benchmark") for a in archs}) == 6466
    # skip_connect is the identity there: conv after a skip equals the conv itself ...
    a = "|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"
    b = "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert space.hash(a, equivalence="benchmark") == space.hash(b, equivalence="benchmark")
    assert space.hash(a) != space.hash(b)
    # ... and the terms of a sum are unordered
    c = "|skip_connect~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|"
    d = "|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    assert space.benchmark_key(c) == space.benchmark_key(d) == "#+(0)@avg_pool_3x3+(0)@nor_conv_3x3"
    # as in the benchmark, only node 1 can be zero: node 2 = 0 + 0 is kept as a term
    e = "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"
    assert space.benchmark_key(b) == "#+#+(0)@nor_conv_3x3"
    assert space.benchmark_key(e) == "#+#+#+(0)@nor_conv_3x3"
    assert space.hash(e) == space.hash(b)  # the default equivalence drops the dead edge
    with pytest.raises(ValueError, match="unknown equivalence 'iso'; valid: default, benchmark"):
        space.hash(a, equivalence="iso")


# ----------------------------------------------------------------------------- vectors
def test_encode_decode(space):
    assert space.encoding_choices == [5] * 6
    v = space.encode(EXAMPLE)
    assert v.dtype == np.int64 and v.tolist() == [3, 3, 4, 1, 3, 1]
    assert space.decode(v) == EXAMPLE
    assert space.decode([3, 3, 4, 1, 3, 1]) == EXAMPLE
    for a in space.sample_many(30, seed=9):
        assert space.decode(space.encode(a)) == a
    with pytest.raises(InvalidArchitecture, match="position 2 is 5; valid values are 0..4"):
        space.decode([0, 0, 5, 0, 0, 0])
    with pytest.raises(InvalidArchitecture, match=r"shape \(6,\)"):
        space.decode([0, 0, 0])
    assert [OPS[i] for i in v] == [op for node in space.parse(EXAMPLE) for op, _ in node]
    assert len(EDGES) == 6


# ----------------------------------------------------------------------------- builder
def test_build_reference_layout(space):
    model = space.build(EXAMPLE)
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["stem.0.weight", "stem.1.weight", "stem.1.bias"]
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert "cells.0.layers.0.op.1.weight" in names
    assert "cells.5.downsample.1.weight" in names and "cells.11.conv_b.op.2.bias" in names
    assert len(model.cells) == 17
    shapes = dict(model.named_parameters())
    assert shapes["cells.5.conv_a.op.1.weight"].shape == (32, 16, 3, 3)
    assert shapes["classifier.weight"].shape == (10, 64)
    assert n_params(model) == 802426


def test_param_counts_match_benchmark(space, nb201_csv):
    with open(nb201_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 491
    wrong_params_m = set()
    for row in rows:
        count = n_params(space.build(row["arch"]))
        assert same_to_csv_precision(count, row["naslib_params"]), (row["arch"], count, row["naslib_params"])
        if not same_to_csv_precision(count, row["params_m"]):
            wrong_params_m.add(row["arch"])
    assert wrong_params_m == BAD_PARAMS_M_ROWS


@pytest.mark.parametrize("seed", range(4))
def test_forward_small(space, seed):
    arch = space.sample(seed)
    torch.manual_seed(seed)
    model = space.build(arch, C=8, N=1, num_classes=7)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()


def test_forward_matches_zero_semantics(space):
    """A `none` edge is skipped; a node with only `none` inputs is zero."""
    arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    model = space.build(arch, C=4, N=1).eval()
    cell = model.cells[0]
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(cell(x), torch.zeros_like(x))
    arch = "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"
    cell = space.build(arch, C=4, N=1).cells[0]
    torch.testing.assert_close(cell(x), torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


def test_build_rejects_bad_args(space):
    with pytest.raises(InvalidArchitecture):
        space.build("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="C >= 1"):
        space.build(EXAMPLE, C=0)
