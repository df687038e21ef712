"""'zero-shot': each space's default aggregate, usable wherever a proxy name is."""
from __future__ import annotations

import pytest

import ghnas
import search_spaces
from ghnas.errors import InputError
from ghnas.proxies import get_proxy, score
from ghnas.proxies.zero_shot import DEFAULTS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("space", sorted(DEFAULTS))
def test_zero_shot_resolves_per_space(space):
    p = get_proxy("zero-shot", space=space)
    members, method = DEFAULTS[space]
    assert [m.name for m in p.members] == [m.proxy for m in members] and p.method == method
    assert p.label.startswith(f"zero-shot:{space}:")
    for spec, m in zip(members, p.members):  # each member as it was measured
        assert m.default_batch_size == (spec.batch_size or type(m).default_batch_size)
        assert all(m.settings()[k] == v for k, v in spec.settings)


def test_member_with_its_own_batch_and_settings():
    from ghnas.proxies.zero_shot import Member

    m = Member("swap", (("repeats", 2),), batch_size=8).make()
    assert m.repeats == 2 and m.default_batch_size == 8 and type(m).default_batch_size == 16
    assert "default_batch_size" not in m.settings()
    with pytest.raises(InputError, match="reads no images"):
        Member("params", batch_size=8).make()
    with pytest.raises(InputError, match="positive integer"):
        get_proxy("meco").with_batch_size(0)


def test_zero_shot_needs_a_known_space():
    with pytest.raises(InputError, match="space="):
        get_proxy("zero-shot")
    with pytest.raises(InputError, match="no 'zero-shot' default"):
        get_proxy("zero-shot", space="nowhere")


def test_zero_shot_scores_and_is_the_search_default():
    archs = search_spaces.get("nb201").sample_many(4, seed=0, unique=True)
    table = score(archs, "nb201", proxy="zero-shot", data="sample", batch_size=8,
                  build_kwargs={"C": 4, "N": 1}, progress=False)
    assert len({r.score for r in table.rows}) > 1
    result = ghnas.search("nb201", budget=3, data="sample", batch_size=8, build_kwargs={"C": 8, "N": 1},
                          progress=False)
    assert result.settings["proxy"].startswith("zero-shot:nb201")
    # no GHN in the proxy: the best network is warm-started with the space's shipped GHN
    import torch

    torch.manual_seed(0)
    plain = result.build(pretrained=False).state_dict()
    torch.manual_seed(0)
    warm = result.build().state_dict()
    weights = [k for k, v in plain.items() if v.is_floating_point() and k.endswith("weight")]
    assert all(warm[k].equal(plain[k]) is False for k in weights[:3])
