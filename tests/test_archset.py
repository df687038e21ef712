"""HDF5 architecture datasets: round trip, disjoint splits, errors."""
from __future__ import annotations

import numpy as np
import pytest

import search_spaces
from ghnas.archset import ArchSet, count_flops, write_archset
from ghnas.graph import extract

BUILD = {"C": 4, "N": 1}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("aset") / "nb201.h5"
    write_archset(path, space="nb201", n_train=6, n_val=3, n_test=2, seed=3, build_kwargs=BUILD,
                  progress=False)
    return path


def test_round_trip_graphs_and_properties(small_set):
    ds = ArchSet(small_set)
    assert ds.space == "nb201" and ds.seed == 3 and ds.build_kwargs == BUILD
    assert [len(ds[s]) for s in ("train", "val", "test")] == [6, 3, 2]
    space = search_spaces.get("nb201")
    for split in ("train", "val", "test"):
        part = ds[split]
        for arch, graph, params, flops in zip(part.arch, part.graphs, part.params, part.flops):
            model = space.build(arch, **BUILD)
            ref = extract(model)
            assert [(n.op, n.name, n.shape, n.params, n.role) for n in graph.nodes] == \
                   [(n.op, n.name, n.shape, n.params, n.role) for n in ref.nodes]
            np.testing.assert_array_equal(graph.edges, ref.edges)
            assert params == sum(p.numel() for p in model.parameters())
            assert flops == count_flops(model)


def test_splits_are_disjoint_and_seeded(small_set, tmp_path):
    ds = ArchSet(small_set)
    space = search_spaces.get("nb201")
    hashes = {s: {space.hash(a) for a in ds[s].arch} for s in ("train", "val", "test")}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    again = write_archset(tmp_path / "again.h5", space="nb201", n_train=6, n_val=3, n_test=2,
                          seed=3, build_kwargs=BUILD, progress=False)
    assert ArchSet(again)["val"].arch == ds["val"].arch
    # the held-out splits do not depend on the size of the training split
    bigger = write_archset(tmp_path / "bigger.h5", space="nb201", n_train=9, n_val=3, n_test=2,
                           seed=3, build_kwargs=BUILD, progress=False)
    assert ArchSet(bigger)["test"].arch == ds["test"].arch


def test_count_flops_single_conv():
    from torch import nn

    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 3, 8, 8)) == 8 * 8 * 8 * 3 * 9


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_archset"):
        ArchSet(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        ArchSet(bad)
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="not a ghnas architecture dataset"):
        ArchSet(other)
    with pytest.raises(ValueError, match=">= 0"):
        write_archset(tmp_path / "neg.h5", n_train=-1, progress=False)
    assert not (tmp_path / "neg.h5").exists()
