"""``'zero-shot'``: the default proxy of each space, an aggregate chosen on data.

Its members and aggregation were chosen per space by ``benchmarks/choose_default.py`` on
the tuning half (even rows) of that space's dev set, among the proxies that
``benchmarks/bench_proxies.py`` measured at the proxy network size, within the speed
target (the members' end-to-end seconds, ``benchmarks/bench_proxy_speed.py``, at most
60 s per 100 architectures); ``benchmarks/results/default_<space>/`` holds the choice
and its numbers on the other half. Each member keeps the settings and batch size it was
measured with (:class:`Member`). It ranks over the whole scored set, like every ensemble.

    >>> from ghnas.proxies import get_proxy
    >>> get_proxy('zero-shot', space='nb201').label.startswith('zero-shot:nb201')
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Proxy, get_proxy, space_name
from .ensemble import Ensemble


@dataclass(frozen=True)
class Member:
    """A member of a default aggregate as it was measured and chosen: the proxy's name, its
    settings (constructor arguments) and its batch size (``None``: the proxy's own)."""

    proxy: str
    settings: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None

    def make(self) -> Proxy:
        p = get_proxy(self.proxy, **dict(self.settings))
        return p if self.batch_size is None else p.with_batch_size(self.batch_size)


#: per space: (members, aggregation); see benchmarks/results/default_<space>/README.md
DEFAULTS: dict[str, tuple[tuple[Member, ...], str]] = {
    # with the GHN proxy (the NB201 ranking GHN, the loss on 1,000 images)
    "nb201": ((Member("swap", (("repeats", 8),)), Member("ghn"), Member("meco")), "mean"),
    # with the GHN proxy (the DARTS ranking GHN, minus its predicted networks' confidence)
    "darts": ((Member("swap", (("repeats", 1),)), Member("ghn", batch_size=200)), "log_rank"),
}


class ZeroShot(Ensemble):
    """The default zero-shot aggregate of a space (:data:`DEFAULTS`).

    Args:
        space: the space (name or object) whose default to use.
    """

    def __init__(self, space: Any):
        name = space_name(space)
        if name not in DEFAULTS:
            from ..errors import InputError

            raise InputError(f"no 'zero-shot' default for space {name!r}; it exists for "
                             f"{', '.join(sorted(DEFAULTS))} (pass a proxy name instead)")
        members, method = DEFAULTS[name]
        super().__init__([m.make() for m in members], method=method)
        self.space = name

    @property
    def label(self) -> str:
        return f"zero-shot:{self.space}:{self.method}:" + ",".join(m.name or type(m).__name__ for m in self.members)

