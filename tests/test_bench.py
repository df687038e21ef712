"""Tests for ghnas.bench: CSV rows, resuming, refusing mixed settings, reading as truth."""
from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ghnas.train
import search_spaces
from ghnas.bench import COLUMNS, bench, read_rows, settings_path
from ghnas.correlation import read_truth

CLASSES = ["a", "b", "c"]
# tiny networks, tiny images, a few steps each
FAST = dict(space="nb201", epochs=1, val_size=12, build_kwargs={"C": 4, "N": 1, "num_classes": 3},
            train_kwargs={"batch_size": 16}, device="cpu", progress=False)


@pytest.fixture(autouse=True)
def _one_thread_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tree(tmp_path) -> str:
    """An ImageFolder tree of 3 classes x 20 images of 8x8, class = dominant colour."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            arr = rng.integers(0, 80, size=(8, 8, 3), dtype=np.uint8)
            arr[..., label] += 150
            Image.fromarray(arr).save(root / cls / f"{i:02d}.png")
    return f"imagefolder:{root}"


@pytest.fixture
def counter(monkeypatch):
    """Counts calls of ghnas.train.train (bench looks it up at call time)."""
    calls: list[int] = []
    real = ghnas.train.train

    @functools.wraps(real)  # keeps train's signature, which bench reads
    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ghnas.train, "train", counting)
    return calls


def test_bench_writes_rows_that_read_as_ground_truth(tree, tmp_path, counter):
    out = bench(n=3, data=tree, out=tmp_path / "b.csv", seed=1, **FAST)
    assert out == tmp_path / "b.csv" and len(counter) == 3
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS)
    space = search_spaces.get("nb201")
    assert [r["arch"] for r in rows] == space.sample_many(3, seed=1, unique=True)
    for r in rows:
        assert 0.0 <= float(r["val_acc"]) <= 100.0
        assert float(r["train_loss"]) > 0 and float(r["seconds"]) > 0
        assert int(r["params"]) == sum(p.numel() for p in space.build(r["arch"], C=4, N=1, num_classes=3).parameters())
        assert r["seed"] == "1" and r["epochs"] == "1"
    truth = read_truth(out, acc_col="val_acc", space="nb201")
    assert truth == {r["arch"]: float(r["val_acc"]) for r in rows}
    side = json.loads(settings_path(out).read_text())
    assert side["space"] == "nb201" and side["epochs"] == 1 and side["seed"] == 1
    assert side["train_kwargs"]["batch_size"] == 16 and side["train_kwargs"]["lr"] == 0.025
    assert settings_path(out).name == "b.settings.json"


def test_resume_reuses_finished_rows(tree, tmp_path, counter):
    out = tmp_path / "b.csv"
    bench(n=3, data=tree, out=out, **FAST)
    first = out.read_text()
    assert len(counter) == 3
    bench(n=3, data=tree, out=out, **FAST)  # nothing left to do
    assert len(counter) == 3 and out.read_text() == first
    bench(n=5, data=tree, out=out, **FAST)
    assert len(counter) == 5
    text = out.read_text()
    assert text.startswith(first)  # the first 3 rows are kept as they were
    archs = [r["arch"] for r in read_rows(out)]
    assert archs == search_spaces.get("nb201").sample_many(5, seed=0, unique=True)


def test_interrupted_run_loses_only_the_arch_in_progress(tree, tmp_path, monkeypatch):
    out = tmp_path / "b.csv"
    calls: list[int] = []
    real = ghnas.train.train

    @functools.wraps(real)
    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-training
        return real(*args, **kwargs)

    monkeypatch.setattr(ghnas.train, "train", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        bench(n=4, data=tree, out=out, **FAST)
    assert len(read_rows(out)) == 2
    # a kill while the row was being written leaves a partial last line
    with open(out, "a") as fh:
        fh.write('"|nor_conv_3x3~0|+|none~0|none~1|+|skip_con')
    calls.clear()
    monkeypatch.setattr(ghnas.train, "train",
                        functools.wraps(real)(lambda *a, **k: (calls.append(1), real(*a, **k))[1]))
    with pytest.warns(UserWarning, match="incomplete last row"):
        bench(n=4, data=tree, out=out, **FAST)
    assert len(calls) == 2
    rows = read_rows(out)
    assert [r["arch"] for r in rows] == search_spaces.get("nb201").sample_many(4, seed=0, unique=True)


def test_mismatched_settings_are_refused_by_name(tree, tmp_path, counter):
    out = tmp_path / "b.csv"
    bench(n=1, data=tree, out=out, **FAST)
    with pytest.raises(ValueError, match=r"epochs: file has 1, this run has 2"):
        bench(n=2, data=tree, out=out, **{**FAST, "epochs": 2})
    with pytest.raises(ValueError, match=r"train_kwargs\['lr'\]: file has 0.025, this run has 0.1"):
        bench(n=2, data=tree, out=out, **{**FAST, "train_kwargs": {"batch_size": 16, "lr": 0.1}})
    with pytest.raises(ValueError, match=r"build_kwargs"):
        bench(n=2, data=tree, out=out, **{**FAST, "build_kwargs": {"C": 8, "N": 1, "num_classes": 3}})
    with pytest.raises(ValueError, match=r"seed: file has 0, this run has 5"):
        bench(n=2, data=tree, out=out, seed=5, **FAST)
    assert len(counter) == 1 and len(read_rows(out)) == 1
    # the same settings spelled with the defaults written out are the same run
    bench(n=2, data=tree, out=out, **{**FAST, "train_kwargs": {"batch_size": 16, "lr": 0.025}})
    assert len(counter) == 2


def test_rows_without_settings_file_are_refused(tree, tmp_path):
    out = tmp_path / "b.csv"
    bench(n=1, data=tree, out=out, **FAST)
    settings_path(out).unlink()
    with pytest.raises(ValueError, match="no settings file b.settings.json"):
        bench(n=2, data=tree, out=out, **FAST)


def test_bad_train_kwargs_are_named(tree, tmp_path):
    with pytest.raises(ValueError, match=r"may not set \['steps'\]"):
        bench(n=1, data=tree, out=tmp_path / "b.csv", **{**FAST, "train_kwargs": {"steps": 3}})
    with pytest.raises(ValueError, match=r"unknown train_kwargs \['learning_rate'\]"):
        bench(n=1, data=tree, out=tmp_path / "b.csv", **{**FAST, "train_kwargs": {"learning_rate": 3}})


def test_never_loads_the_test_split(tree, tmp_path, monkeypatch):
    import ghnas.data

    splits = []
    real = ghnas.data.load

    def spy(*args, **kwargs):
        splits.append(kwargs.get("split"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ghnas.data, "load", spy)
    bench(n=1, data=tree, out=tmp_path / "b.csv", **FAST)
    assert sorted(splits) == ["train", "val"]


def test_darts_genotype_strings_round_trip_through_the_csv(tree, tmp_path):
    # DARTS strings hold commas and quotes: the CSV must quote them and read them back
    kw = {**FAST, "space": "darts", "build_kwargs": {"C": 2, "layers": 3, "num_classes": 3}}
    out = bench(n=2, data=tree, out=tmp_path / "d.csv", **kw)
    truth = read_truth(out, acc_col="val_acc", space="darts")
    assert list(truth) == search_spaces.get("darts").sample_many(2, seed=0, unique=True)
