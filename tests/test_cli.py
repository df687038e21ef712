"""The ghnas command line: every subcommand on tiny inputs, and clean errors for bad input."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search_spaces
from conftest import write_truth_csv
from ghnas.cli import main
from ghnas.ghn import GHN2, save_ghn

REPO = Path(__file__).resolve().parents[1]
NB = search_spaces.get("nb201")
pytestmark = pytest.mark.filterwarnings("ignore:the GHN's shape encoding has no entry", "ignore:meta-training on the shipped",
                                        "ignore:.*not used by the forward pass", "ignore::DeprecationWarning")




@pytest.fixture(scope="module")
def ghn_file(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_ghn(GHN2(hid=16, max_shape=(16, 16, 3, 3)), tmp_path_factory.mktemp("ghn") / "g.pt"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, *argv, match: str):
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("ghnas"), err
    assert "Traceback" not in err
    assert match in lines[-1], lines[-1]


# ----------------------------------------------------------------------------- search
def test_search(capsys, tmp_path, ghn_file):
    out = tmp_path / "s"
    code, stdout, _ = run(capsys, "search", "--budget", 4, "--ghn", ghn_file, "--build", "C=4,N=1",
                          "--batch-size", 16, "--out", out, "-q", "--device", "cpu")
    assert code == 0
    res = json.loads((out / "result.json").read_text())
    assert len(res["table"]) == 4 and res["settings"]["build_kwargs"] == {"C": 4, "N": 1}
    assert (out / "search.png").exists() and (out / "scores.jsonl").exists()
    assert "rank" in stdout and res["best_arch"] in stdout
    # the summary table lists every architecture (fewer than --top)
    assert sum(1 for r in res["table"] if r["arch"] in stdout) == 4


def test_search_evolution_with_baseline_proxy(capsys, tmp_path):
    code, stdout, _ = run(capsys, "search", "--budget", 5, "--proxy", "params", "--strategy", "evolution",
                          "--population", 2, "--sample-size", 2, "--build", "C=4", "--build", "N=1",
                          "--out", tmp_path, "-q", "--top", 3)
    assert code == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["strategy"] == "evolution"
    assert res["settings"]["strategy_kwargs"] == {"population": 2, "sample_size": 2, "max_retries": 100, "chunk": 16}
    assert sum("|+|" in line for line in stdout.splitlines()) == 3 + 1  # three table rows, "best:"


# ----------------------------------------------------------------------------- score / rank
def test_score_and_rank(capsys, tmp_path, ghn_file):
    archs = NB.sample_many(3, seed=0, unique=True)
    f = tmp_path / "archs.txt"
    f.write_text("# candidates\n" + "\n".join(archs[:2]) + "\n\n")
    out_csv = tmp_path / "out" / "scores.csv"
    code, stdout, _ = run(capsys, "score", "--proxy", "params", "--file", f, archs[2], "--build", "C=4,N=1",
                          "--out", tmp_path / "out", "-q")
    assert code == 0
    rows = list(csv.DictReader(open(out_csv)))
    assert sorted(r["arch"] for r in rows) == sorted(archs)
    for a in archs:
        assert a in stdout
    code, stdout, _ = run(capsys, "rank", "--proxy", "ghn", "--ghn", ghn_file, *archs[:2], "--build", "C=4,N=1",
                          "--batch-size", 16, "-q")
    assert code == 0 and archs[0] in stdout and "rank" in stdout


def test_score_reads_a_csv_column(capsys, tmp_path):
    archs = NB.sample_many(2, seed=1, unique=True)
    f = tmp_path / "a.csv"
    f.write_text("name,x\n" + "\n".join(f"{a},1" for a in archs) + "\n")
    code, stdout, _ = run(capsys, "score", "--proxy", "params", "--file", f, "--arch-col", "name", "-q")
    assert code == 0 and all(a in stdout for a in archs)


# ----------------------------------------------------------------------------- correlate
def test_correlate(capsys, tmp_path):
    archs = NB.sample_many(8, seed=2, unique=True)
    truth = write_truth_csv(tmp_path / "truth.csv", archs, 80)
    out = tmp_path / "corr"
    argv = ["correlate", "--truth", truth, "--proxies", "params,flops", "--build", "C=4,N=1",
            "--n-boot", 50, "--out", out, "-q"]
    code, stdout, _ = run(capsys, *argv)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(p["proxy"] for p in report["proxies"]) == ["flops", "params"]
    assert all(p["n"] == 8 for p in report["proxies"])
    assert (out / "scatter.png").exists() and (out / "report.md").exists()
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 8 and set(rows[0]) == {"arch", "test_acc", "params", "flops"}
    assert "Kendall" in stdout
    # a second run is served from the cache
    lines = (out / "scores.jsonl").read_text().count("\n")
    assert run(capsys, *argv)[0] == 0
    assert (out / "scores.jsonl").read_text().count("\n") == lines


def test_correlate_on_the_dev_set(capsys, tmp_path, nb201_csv):
    code, stdout, _ = run(capsys, "correlate", "--truth", nb201_csv, "--n", 6, "--proxies", "params",
                          "--n-boot", 20, "--build", "C=4,N=1", "--out", tmp_path, "-q")
    assert code == 0
    assert json.loads((tmp_path / "report.json").read_text())["proxies"][0]["n"] == 6


# ----------------------------------------------------------------------------- meta-train / archset / bench
def test_meta_train_and_resume(capsys, tmp_path):
    out = tmp_path / "meta"
    common = ["--space", "nb201", "--data", "sample", "--meta-batch", 2, "--batch-size", 8, "--hid", 8,
              "--max-shape", "8,8,3,3", "--build", "C=4,N=1", "--eval-every", 0, "--eval-archs", 2,
              "--eval-images", 16, "--eval-batch", 8, "--device", "cpu", "--no-amp", "-q"]
    code, stdout, _ = run(capsys, "meta-train", "--out", out, "--steps", 2, *common)
    assert code == 0, stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["hid"] == 8 and cfg["max_shape"] == [8, 8, 3, 3]
    assert cfg["build_kwargs"] == {"C": 4, "N": 1} and cfg["amp"] is False
    assert (out / "ghn.pt").exists()
    # the same folder with the same settings continues (nothing left to do); other settings are refused
    code, stdout, _ = run(capsys, "meta-train", "--out", out, "--steps", 2, *common)
    assert code == 0 and "2 steps" in stdout
    assert_user_error(capsys, "meta-train", "--out", out, "--steps", 2, *common, "--lr", 0.5,
                      match="different settings")
    code, stdout, _ = run(capsys, "meta-train", "--out", out, "--resume", "--steps", 3, "-q")
    assert code == 0 and "3 steps" in stdout
    # the meta-trained GHN plugs into search, with the sizes from its config.json
    code, stdout, _ = run(capsys, "search", "--budget", 2, "--ghn", out / "ghn.pt", "--batch-size", 8,
                          "--out", tmp_path / "s", "-q")
    assert code == 0
    assert json.loads((tmp_path / "s" / "result.json").read_text())["settings"]["build_kwargs"] == {"C": 4, "N": 1}


def test_archset(capsys, tmp_path):
    import h5py

    out = tmp_path / "a" / "archset.h5"
    code, stdout, _ = run(capsys, "archset", "--n-train", 2, "--n-val", 1, "--n-test", 1, "--build", "C=4,N=1",
                          "--out", tmp_path / "a", "-q")
    assert code == 0 and out.exists()
    with h5py.File(out) as f:
        assert f.attrs["space"] == "nb201"


def _tiny_imagefolder(root: Path, per_class: int = 12) -> Path:
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                write_png(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g), str(d / f"{i}.png"))
    return root


def test_bench(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))
    root = _tiny_imagefolder(tmp_path / "imgs")
    out = tmp_path / "bench" / "bench.csv"
    code, stdout, _ = run(capsys, "bench", "--n", 1, "--epochs", 1, "--data", f"imagefolder:{root}",
                          "--build", "C=4,N=1,num_classes=2", "--train", "batch_size=8", "--val-size", 4,
                          "--out", tmp_path / "bench", "--device", "cpu", "-q")
    assert code == 0, stdout
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1 and 0 <= float(rows[0]["val_acc"]) <= 100


# ----------------------------------------------------------------------------- errors
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, ghn_file):
    assert_user_error(capsys, "search", "--space", "nb999", "--proxy", "params", "--budget", 2,
                      match="unknown search space 'nb999'")
    assert_user_error(capsys, "search", "--proxy", "nope", "--budget", 2, match="unknown proxy 'nope'")
    assert_user_error(capsys, "search", "--ghn", tmp_path / "missing.pt", "--budget", 2, match="missing.pt")
    assert_user_error(capsys, "search", "--budget", 0, "--proxy", "params", match="budget")
    assert_user_error(capsys, "search", "--proxy", "params", "--build", "C8", match="KEY=VALUE")
    assert_user_error(capsys, "search", "--proxy", "params", "--budget", 2, "--ghn", ghn_file,
                      match="only used by GHN proxies")
    assert_user_error(capsys, "score", "--proxy", "params", "not-an-arch", match="not-an-arch")
    assert_user_error(capsys, "score", "--proxy", "nope", NB.sample(0), match="unknown proxy 'nope'")
    assert_user_error(capsys, "score", "--proxy", "params", "--file", tmp_path / "none.txt", match="none.txt")
    assert_user_error(capsys, "score", "--proxy", "params", match="no architectures")
    assert_user_error(capsys, "correlate", "--truth", tmp_path / "none.csv", match="none.csv")
    assert_user_error(capsys, "correlate", "--truth", tmp_path / "none.csv", "--space", "foo", match="foo")
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,test_acc\nfoo,1\n")
    assert_user_error(capsys, "correlate", "--truth", bad, "--proxies", "params", match="foo")
    good = tmp_path / "good.csv"
    good.write_text("arch,test_acc\n" + "\n".join(f"{a},{i}" for i, a in enumerate(NB.sample_many(6, seed=0))))
    assert_user_error(capsys, "correlate", "--truth", good, "--proxies", "params,zzz", match="unknown proxy 'zzz'")
    assert_user_error(capsys, "meta-train", "--out", tmp_path / "m", "--resume", match="nothing to resume")
    assert_user_error(capsys, "meta-train", "--out", tmp_path / "m2", "--archset", tmp_path / "x.h5",
                      match="x.h5")
    assert_user_error(capsys, "archset", "--space", "nope", "--out", tmp_path / "x", match="nope")
    assert_user_error(capsys, "bench", "--space", "nope", "--out", tmp_path / "b", match="nope")
    assert_user_error(capsys, "archset", "--out", tmp_path / "x.h5", match="names a folder")
    assert_user_error(capsys, "bench", "--out", tmp_path / "b.csv", match="names a folder")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--budget", "many"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # argparse choices name the valid strategies
        main(["search", "--strategy", "annealing"])
    assert e.value.code == 2 and "evolution" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    capsys.readouterr()


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("search", "score", "rank", "correlate", "meta-train", "archset", "bench"))


def test_python_m_ghnas_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = subprocess.run([sys.executable, "-m", "ghnas", "score", "--proxy", "params", "|bad~0|"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and bad.stderr.strip().count("\n") == 0


# ----------------------------------------------------------------------------- examples
def _example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["search_nb201", "search_darts"])
def test_search_examples_quick(capsys, tmp_path, ghn_file, name):
    assert _example(name).main(["--quick", "--ghn", ghn_file, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best" in out and (tmp_path / "result.json").exists()


def test_search_example_uses_the_shipped_ghn_by_default(capsys, tmp_path):
    assert _example("search_nb201").main(["--quick", "--out", str(tmp_path)]) == 0
    assert "ghn" in capsys.readouterr().out and (tmp_path / "result.json").exists()


def test_correlation_example_quick(capsys, tmp_path, nb201_csv, ghn_file):
    argv = ["--quick", "--truth", str(nb201_csv), "--out", str(tmp_path), "--ghn", ghn_file]
    assert _example("correlation_nb201").main(argv) == 0
    out = capsys.readouterr().out
    assert "Kendall" in out and "ghn" in out and (tmp_path / "scatter.png").exists()


def test_every_meta_train_option_has_help_from_the_config_docstring():
    import dataclasses

    from ghnas.cli import _metatrain_docs
    from ghnas.metatrain import MetaTrainConfig

    docs = _metatrain_docs()
    fields = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    missing = sorted(n for n in fields if not docs.get(n))
    assert not missing, f"MetaTrainConfig fields without an Attributes entry: {missing}"
    assert "``" not in docs["data"] and "ghnas.data.load" in docs["data"]
