"""Everything a search (or a score table, or a correlation) decides before scoring: the
proxy and its GHN, the network size, the image batch.

Network sizes for proxies
-------------------------
Proxies score small versions of the networks, so a search of 100 architectures takes
minutes on a CPU. :data:`PROXY_BUILD_KWARGS` holds the default size per space (NB201:
``C=8, N=1``; DARTS: ``C=8, layers=5``); the GHNs shipped with ghnas are trained at the
same sizes. The size is chosen in this order: ``build_kwargs`` given by the user; for the
GHN proxy alone (``'ghn'``, not in an aggregate) with the space's shipped ranking GHN, the
size it was chosen to rank that space at (:data:`ghnas.proxies.ghn.SPACE_SIZES`: DARTS
``C=16, layers=8``); the size the proxy's GHN was trained at
(:meth:`ghnas.ghn.GHNRef.build_kwargs`: its registry entry, a ``<checkpoint>.json`` sidecar,
or the ``config.json`` of a ``ghnas meta-train`` run folder); :data:`PROXY_BUILD_KWARGS`.
An aggregate scores all its members at one size, so the GHN member of ``'zero-shot'``
scores at the shared size it was chosen with.

Image batch
-----------
A proxy that needs data gets ``batch_size`` images (default: the proxy's
``default_batch_size``: 1,000 for the GHN proxy (500 on DARTS), 64 for the baselines, the largest of
the members' for an ensemble) drawn with the run's seed from the validation split of
the dataset (``val_size`` images carved from its training images; the shipped
``'sample'`` has only test images and is used whole).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError
from ..ghn.ref import GHNRef

__all__ = ["PROXY_BUILD_KWARGS", "VAL_IMAGES", "ProxySetup", "prepare_proxy", "proxy_build_kwargs",
           "ghn_build_kwargs", "ranking_size", "proxy_images", "train_val_images", "proxy_members"]

#: Default network size per space when a proxy scores architectures (small, so that a
#: CPU scores ~100 architectures in minutes). The GHNs shipped with ghnas
#: (``'ghnas-<space>-cifar10'``) are meta-trained at these sizes.
PROXY_BUILD_KWARGS: dict[str, dict[str, Any]] = {
    "nb201": {"C": 8, "N": 1},
    "darts": {"C": 8, "layers": 5},
}

#: validation images used to measure the networks trained with ``train_top_k``
VAL_IMAGES = 2000


def ghn_build_kwargs(ghn: Any, space: str | None = None) -> dict[str, Any] | None:
    """The ``build_kwargs`` a GHN (name, path or :class:`~ghnas.ghn.GHNRef`) was trained
    with, if recorded (see :meth:`ghnas.ghn.GHNRef.build_kwargs`); ``None`` otherwise."""
    if not isinstance(ghn, (str, os.PathLike, GHNRef)):
        return None
    return GHNRef.of(ghn).build_kwargs(space)


def proxy_build_kwargs(space: str, ghn: Any = None, proxy: Any = None) -> dict[str, Any]:
    """Default network size for proxies on ``space`` (see the module docstring); ``proxy``
    (an instance) is the proxy that will score, ``ghn`` the GHN it predicts with."""
    ranking = ranking_size(space, proxy)
    if ranking is not None:
        return ranking
    from_ghn = ghn_build_kwargs(ghn, space) if ghn is not None else None
    if from_ghn:
        return from_ghn
    return dict(PROXY_BUILD_KWARGS.get(space, {}))


def ranking_size(space: str, proxy: Any) -> dict[str, Any] | None:
    """The size the GHN proxy alone ranks ``space`` at with the space's shipped ranking GHN
    (:data:`ghnas.proxies.ghn.SPACE_SIZES`), when ``proxy`` is that proxy; else ``None``."""
    from ..proxies.ghn import SPACE_SIZES

    if proxy is None or getattr(proxy, "name", None) != "ghn" or space not in SPACE_SIZES:
        return None
    ref = proxy.ghn_ref
    try:
        shipped = GHNRef.default(space, "rank").label
    except FileNotFoundError:
        return None
    if ref is not None and ref.label != shipped:
        return None  # another GHN: the size was chosen with the shipped one only
    return dict(SPACE_SIZES[space])


def proxy_members(proxy: Any) -> list[Any]:
    """The single proxies inside ``proxy``: its members for an ensemble, else itself."""
    return list(getattr(proxy, "members", None) or [proxy])


@dataclass
class ProxySetup:
    """A proxy ready to score: the instance, its label, the GHN it predicts with (if any,
    loaded), the network size and the image batch size (``None`` if it needs no data)."""

    proxy: Any
    label: str
    ghn: GHNRef | None
    ghn_net: Any
    build_kwargs: dict[str, Any]
    batch_size: int | None

    @property
    def settings(self) -> dict[str, Any]:
        """What the settings of a run record about the proxy's GHN."""
        if self.ghn is None:
            return {"ghn": None}
        return {"ghn": self.ghn.label, "ghn_saved": self.ghn.saved}


def prepare_proxy(space: Any, proxy: Any, *, ghn: Any = None, proxy_kwargs: Mapping[str, Any] | None = None,
                  build_kwargs: Mapping[str, Any] | None = None, batch_size: int | None = None,
                  device: Any = "cpu", ghn_only_if_needed: bool = False) -> ProxySetup:
    """Make the proxy and load its GHN once; the one place that decides GHN questions.

    Args:
        space: the search space object.
        proxy: a proxy name, ensemble name (``'ghn+synflow'``) or instance.
        ghn: the GHN for every member that predicts with one (name, path, ``GHN2`` or
            ``GHNRef``); ``None``: members without a GHN get the one shipped for the space.
            Given to a proxy that uses no GHN it is an error, unless ``ghn_only_if_needed``.
        proxy_kwargs: constructor arguments of a named proxy.
        build_kwargs: network size (default: see the module docstring).
        batch_size: images per batch (default: the proxy's ``default_batch_size``).
        device: where the GHN is loaded.
    """
    from ..proxies import get_proxy

    prox = get_proxy(proxy, space=space, **dict(proxy_kwargs or {}))
    space_name = getattr(space, "name", type(space).__name__)
    if ghn is not None and (prox.needs_ghn or not ghn_only_if_needed):
        prox.use_ghn(ghn)  # InputError for a proxy without a GHN
    ref, net = None, None
    for m in proxy_members(prox):
        if not m.needs_ghn:
            continue
        if m.ghn_ref is None:
            m.use_ghn(GHNRef.default(space_name, "rank"))
        ref = m.ghn_ref
        net = ref.load(device)  # fails here, before any scoring, for a missing file
    if build_kwargs is not None:
        kw = dict(build_kwargs)
    else:
        kw = proxy_build_kwargs(space_name, ref if ref is not None and ref.saved else None, prox)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    bs = (int(batch_size) if batch_size is not None else int(prox.default_batch_size)) if prox.needs_data else None
    label = getattr(prox, "label", None) or prox.name or type(prox).__name__
    return ProxySetup(prox, label, ref, net, kw, bs)


# --------------------------------------------------------------------------- data
def proxy_images(data: Any, data_root: Any = None, val_size: int | None = None):
    """The images a proxy is scored on: the ``val`` split of a named dataset (``val_size``
    images; default :func:`ghnas.data.default_val_size`), the sample's test images for
    ``'sample'``, or ``data`` itself when it is not a name."""
    if not isinstance(data, str):
        return data
    from .. import data as gdata

    if data.strip().lower() == "sample":
        return gdata.load("sample")
    return gdata.load(data, root=data_root, split="val", seed=0, val_size=val_size)


def train_val_images(train_data: Any, data: Any, data_root: Any, val_size: int | None = None):
    """``(train, val)`` images for training the top architectures of a search."""
    if isinstance(train_data, (tuple, list)) and len(train_data) == 2:
        return train_data[0], train_data[1]
    src = train_data if train_data is not None else data
    if not isinstance(src, str):
        raise InputError("train_top_k needs training data: pass train_data as a dataset name "
                         "('cifar10', 'imagefolder:PATH') or a (train, val) pair of ImageData")
    if src.strip().lower() == "sample":
        raise InputError("train_top_k cannot train on data='sample' (the shipped sample holds only "
                         "CIFAR-10 test images); pass train_data='cifar10' (with data_root) or a "
                         "(train, val) pair of ImageData")
    from .. import data as gdata

    tr = gdata.load(src, root=data_root, split="train", seed=0, val_size=val_size)
    va = gdata.load(src, root=data_root, split="val", seed=0, val_size=val_size)
    return tr, va.subset(min(VAL_IMAGES, len(va)), seed=0)
