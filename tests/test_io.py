"""ghnas._io: atomic writes and the one-line errors of damaged resume files."""
from __future__ import annotations

import pytest
import torch

from ghnas._io import atomic_torch_save, load_checkpoint


def test_load_checkpoint_round_trip_and_damaged_files(tmp_path):
    """Issue 12: a corrupt meta-training state.pt gave a traceback on resume."""
    p = tmp_path / "state.pt"
    atomic_torch_save({"config": {"seed": 0}, "ghn": {"w": torch.ones(3)}, "step": 7}, p)
    state = load_checkpoint(p, required=("config", "ghn", "step"), what="meta-training state")
    assert state["step"] == 7 and torch.equal(state["ghn"]["w"], torch.ones(3))

    data = p.read_bytes()
    damaged = {
        "truncated.pt": data[: len(data) // 2],
        "flipped.pt": data[:40] + bytes(b ^ 0xFF for b in data[40:80]) + data[80:],
        "empty.pt": b"",
        "text.pt": b"not a checkpoint\n" * 5,
    }
    for name, content in damaged.items():
        q = tmp_path / name
        q.write_bytes(content)
        with pytest.raises(ValueError, match=rf"meta-training state file '.*{name}' is damaged or not a "
                                             r"torch file \(\w+: .*\); restore it") as err:
            load_checkpoint(q, what="meta-training state")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['optimizer'\]"):
        load_checkpoint(p, required=("config", "optimizer"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_load_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(ValueError, match="holds objects other than tensors.*could run code"):
        load_checkpoint(p)
