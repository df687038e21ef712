"""Multi-size meta-training: size specs, seeded size draws, exact resume, one evaluator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import search_spaces
from ghnas.ghn import GHN2
from ghnas.graph import extract
from ghnas.metatrain import (DEFAULT_SIZES, MetaTrainConfig, _ArchPool, _StepInputs, meta_step, meta_train,
                             resolve_sizes)

from test_metatrain import killed_and_resumed  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIZES = "C=4,N=1@3;C=8,N=1@1"
TINY = dict(space="nb201", data="sample", meta_batch=3, batch_size=16, min_images=4, hid=8,
            max_shape=(16, 16, 3, 3), sizes=SIZES, eval_archs=2, eval_images=40, eval_batch=20)


def test_size_spec_parses_and_rejects_bad_input():
    cfg = MetaTrainConfig(sizes="C=8,N=1@4; C=16,N=5")
    assert cfg.sizes == ({"build": {"C": 8, "N": 1}, "weight": 4.0}, {"build": {"C": 16, "N": 5}})
    for bad in ("C8", "C=x", "C=8@-1", "", "C=8@inf"):
        with pytest.raises(ValueError):
            MetaTrainConfig(sizes=bad)
    with pytest.raises(ValueError, match="min_images"):
        MetaTrainConfig(min_images=1)


def test_auto_sizes_follow_build_kwargs():
    space_cfg = MetaTrainConfig(space="nb201")
    train, evals = resolve_sizes(space_cfg, "nb201", {}, cost=lambda b: b["C"] ** 2 * b["N"])
    assert [e["build"] for e in train] == [b for b, _ in DEFAULT_SIZES["nb201"]]
    assert sum(e["weight"] for e in train) == pytest.approx(1.0)
    # big networks see fewer images (sqrt of the cost ratio), never fewer than min_images
    images = {tuple(e["build"].values()): e["images"] for e in train}
    assert images[(8, 1)] == 64 and images[(16, 5)] == max(16, round(64 / np.sqrt(20)))
    assert [e["build"] for e in evals] == [{"C": 8, "N": 1}, {"C": 16, "N": 5}]
    fixed = MetaTrainConfig(space="nb201", build_kwargs={"C": 4, "N": 1})
    train, evals = resolve_sizes(fixed, "nb201", {"C": 4, "N": 1})
    assert train == [{"build": {"C": 4, "N": 1}, "weight": 1.0, "images": 64}]
    assert evals == [{"build": {"C": 4, "N": 1}}]
    # a resolved list resolves to itself, so a resumed run compares equal
    again = MetaTrainConfig(space="nb201", sizes=tuple(train))
    assert resolve_sizes(again, "nb201", {})[0] == train


def test_size_draws_are_seeded_and_follow_the_weights():
    cfg = MetaTrainConfig(**{**TINY, "steps": 40})
    pool = _ArchPool(cfg)
    train, _ = resolve_sizes(cfg, "nb201", {}, pool.cost)
    cfg.sizes = tuple(train)
    data = _StepInputs(pool, cfg, GHN2(hid=8, max_shape=(16, 16, 3, 3)).shape_enc, 10)
    draws = [data.sizes_of(np.random.default_rng([0, s]), 3) for s in range(40)]
    again = [data.sizes_of(np.random.default_rng([0, s]), 3) for s in range(40)]
    assert draws == again
    share_small = np.mean([d["build"]["C"] == 4 for ds in draws for d in ds])
    assert 0.6 < share_small < 0.9  # weight 3 of 4
    assert {d["images"] for ds in draws for d in ds} == {16, 8}  # 4x the cost: half the images


def test_multi_size_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    space = search_spaces.get("nb201")
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    models = [space.build(arch, C=4, N=1).train(), space.build(arch, C=8, N=2).train()]
    graphs = [extract(m) for m in models]
    ghn = GHN2(hid=8, max_shape=(16, 16, 3, 3))
    opt = torch.optim.Adam(ghn.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    losses = [meta_step(ghn, opt, models, graphs, x, y, images=[16, 8])[0] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_multi_size_run_resumes_exactly_and_reports_per_size(tmp_path, monkeypatch):
    cfg = MetaTrainConfig(steps=4, ckpt_every=2, eval_every=2, ema=0.9, **TINY)
    straight = meta_train(tmp_path / "a", cfg, progress=False)
    resumed = killed_and_resumed(tmp_path / "b", cfg, monkeypatch, kill_at=3)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert [h["images"] for h in resumed.history] == [h["images"] for h in straight.history]
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert [e["build"] for e in saved["sizes"]] == [{"C": 4, "N": 1}, {"C": 8, "N": 1}]
    last = straight.evals[-1]
    assert set(last["by_size"]) == {"C=4,N=1", "C=8,N=1"}
    assert last["acc_mean"] == pytest.approx(np.mean([r["acc_mean"] for r in last["by_size"].values()]))
    # the published GHN is the averaged one
    from ghnas.ghn import load_ghn

    published = load_ghn(str(tmp_path / "a" / "ghn.pt")).state_dict()
    assert all(torch.allclose(published[k], a["ema"][k]) for k in published)


def test_corrupt_state_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="meta-training state file .* is damaged"):
        meta_train(run, resume=True, progress=False)


def test_one_evaluator_for_meta_training_and_the_ghn_proxy(monkeypatch):
    import ghnas.ghn.evaluate as ev
    from ghnas.proxies import score
    from ghnas.proxies.ghn import GHNProxy

    calls = []
    real = ev.evaluate_predicted

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "evaluate_predicted", counting)
    ghn = GHN2(hid=8, max_shape=(16, 16, 3, 3))
    space = search_spaces.get("nb201")
    archs = space.sample_many(2, seed=0, unique=True)
    score(archs, space="nb201", proxy=GHNProxy(ghn=ghn), data="sample", batch_size=20,
          build_kwargs={"C": 4, "N": 1}, progress=False)
    assert len(calls) == 2
    import ghnas.data
    from ghnas.metatrain import evaluate_ghn

    pool = _ArchPool(MetaTrainConfig(space="nb201", data="sample", build_kwargs={"C": 4, "N": 1}, eval_archs=0))
    res = evaluate_ghn(ghn, pool, archs, ghnas.data.load("sample").subset(40), torch.device("cpu"), batch=20)
    assert len(calls) == 4 and 0 <= res["acc_mean"] <= 1


def test_a_second_process_cannot_train_the_same_run(tmp_path):
    import subprocess
    import sys
    import textwrap

    from ghnas.errors import InputError

    run = tmp_path / "run"
    cfg = MetaTrainConfig(steps=1, eval_every=0, **{**TINY, "sizes": "fixed", "build_kwargs": {"C": 4, "N": 1}})
    # another process holds the folder's lock (as a running meta-train does)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        os.makedirs({str(run)!r}, exist_ok=True)
        fd = os.open(os.path.join({str(run)!r}, ".lock"), os.O_CREAT | os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError):
            meta_train(run, cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert meta_train(run, cfg, progress=False).step == 1  # free again once the holder is gone
