"""GHN checkpoints: ppuda's file format, a registry of named GHNs, download and cache.

A checkpoint is what ppuda's ``experiments/train_ghn.py`` writes and ``GHN.load`` reads:
a dict ``{'state_dict', 'optimzer' (sic), 'epoch', 'config'}``. Files are always read
with ``torch.load(..., weights_only=True)``, so a checkpoint cannot run code.

Named GHNs come from a small registry: ppuda's released GHN-2s (downloaded once into
``$GHNAS_CACHE`` or ``~/.cache/ghnas`` and checked by git blob SHA-1) and GHNs shipped as
package data under ``ghnas/assets/``. :func:`register_ghn` adds more.
"""
from __future__ import annotations

import hashlib
import os
import reprlib
import urllib.request
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch

from .._io import atomic_path, atomic_torch_save
from .model import GHN2

# buffers that older code stored in checkpoints; they are recomputed, never loaded
_IGNORED_KEYS = ("shape_enc.dummy_ind", "decoder.cols_1d", "decoder.cols_4d")
_PPUDA_RAW = "https://raw.githubusercontent.com/facebookresearch/ppuda/main/checkpoints/"


@dataclass(frozen=True)
class GHNEntry:
    """Where a named GHN comes from (a URL with its git blob SHA-1, or a package asset),
    and what it was trained for: its search ``space``, the network size (``build_kwargs``)
    of the architectures it predicts best (``None``: any network), and its ``purpose``:
    ``'predict'`` (the most accurate predicted parameters: warm starts, ``ghn(model)``)
    or ``'rank'`` (the GHN proxy's default, chosen for how its predictions rank
    architectures, which can be an earlier, less accurate snapshot)."""

    name: str
    url: str | None = None
    git_sha1: str | None = None
    asset: str | None = None
    description: str = ""
    space: str | None = None
    build_kwargs: Mapping[str, Any] | None = None
    purpose: str = "predict"


PURPOSES = ("predict", "rank")
_REGISTRY: dict[str, GHNEntry] = {}


#: checkpoint key marking a GHN meta-trained by ghnas (its shape mapping is learned, so
#: unknown-shape warnings are noise for it)
META_TRAINED_KEY = "ghnas_meta_trained"


def register_ghn(name: str, *, url: str | None = None, git_sha1: str | None = None,
                 asset: str | None = None, description: str = "", space: str | None = None,
                 build_kwargs: Mapping[str, Any] | None = None, purpose: str = "predict",
                 overwrite: bool = False) -> GHNEntry:
    """Make ``load_ghn(name)`` work.

    Args:
        name: the name users pass to :func:`load_ghn`.
        url: download location (http(s) or file://); requires ``git_sha1``.
        git_sha1: SHA-1 of ``b'blob <size>\\0' + content`` (what ``git hash-object`` prints).
        asset: file name under the package's ``ghnas/assets/`` folder.
        description: one line shown by :func:`available_ghns`.
        space: the search space it was meta-trained on (``ghnas.search`` uses a GHN
            registered for a space as that space's default).
        build_kwargs: the network size it was meta-trained at (the default proxy size).
        purpose: ``'predict'`` or ``'rank'`` (see :class:`GHNEntry`): the GHN proxy of a
            space defaults to its ``'rank'`` GHN where one is registered.
        overwrite: replace an existing entry of the same name.

    Example:
        >>> from ghnas.ghn import register_ghn, available_ghns
        >>> _ = register_ghn('my-ghn', asset='my_ghn.pt', description='demo', overwrite=True)
        >>> 'my-ghn' in available_ghns()
        True
    """
    if (url is None) == (asset is None):
        raise ValueError(f"register_ghn({name!r}): give exactly one of url= or asset=")
    if url is not None and (git_sha1 is None or len(git_sha1) != 40):
        raise ValueError(f"register_ghn({name!r}): a url needs git_sha1, the 40-hex-digit git blob SHA-1")
    if purpose not in PURPOSES:
        raise ValueError(f"register_ghn({name!r}): purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a GHN named {name!r} is already registered; pass overwrite=True to replace it")
    entry = GHNEntry(name, url, git_sha1.lower() if git_sha1 else None, asset, description, space,
                     None if build_kwargs is None else dict(build_kwargs), purpose)
    _REGISTRY[name] = entry
    return entry


def available_ghns() -> dict[str, str]:
    """Registered GHN names and their descriptions."""
    return {k: v.description for k, v in sorted(_REGISTRY.items())}


def ghn_entry(name: str) -> GHNEntry | None:
    """The registry entry of ``name`` (``None`` if no GHN of that name is registered)."""
    return _REGISTRY.get(str(name))


register_ghn("ghn2-cifar10", url=_PPUDA_RAW + "ghn2_cifar10.pt",
             git_sha1="4f290e0fad1b73066eeabb50be52e0c377d0b15b",
             description="GHN-2 of Knyazev et al. 2021 trained on CIFAR-10 / DeepNets-1M (ppuda release)")
register_ghn("ghn2-imagenet", url=_PPUDA_RAW + "ghn2_imagenet.pt",
             git_sha1="7b5d6733e9fdf0069bc6186cad3a0b1b54fda68d",
             description="GHN-2 of Knyazev et al. 2021 trained on ImageNet / DeepNets-1M (ppuda release)")
# meta-trained by ghnas on its own spaces (benchmarks/train_shipped_ghns.py); the sidecar
# <name>.json beside each file records the network size it was trained for
register_ghn("ghnas-nb201-cifar10", asset="ghnas-nb201-cifar10.pt", space="nb201",
             build_kwargs={"C": 8, "N": 1}, description="GHN-2 meta-trained by ghnas on NAS-Bench-201 networks of many sizes "
                                                       "(C=8..16, N=1..5; proxy size C=8, N=1), CIFAR-10")
register_ghn("ghnas-nb201-cifar10-rank", asset="ghnas-nb201-cifar10-rank.pt", space="nb201",
             build_kwargs={"C": 8, "N": 1}, purpose="rank",
             description="a snapshot of the NB201 meta-training run chosen for ranking (the GHN proxy's default "
                         "on NB201; benchmarks/choose_ranking_ghn.py)")
register_ghn("ghnas-darts-cifar10-rank", asset="ghnas-darts-cifar10-rank.pt", space="darts",
             build_kwargs={"C": 8, "layers": 5}, purpose="rank",
             description="the DARTS GHN chosen for ranking (the GHN proxy's default on DARTS, scored by "
                         "minus the true-label probability; benchmarks/choose_ranking_ghn.py)")
register_ghn("ghnas-darts-cifar10", asset="ghnas-darts-cifar10.pt", space="darts",
             build_kwargs={"C": 8, "layers": 5}, description="GHN-2 meta-trained by ghnas on DARTS networks of many sizes (C=8..36, 5..20 "
                         "cells; proxy size C=8, 5 cells), CIFAR-10")


# --------------------------------------------------------------------------- files
def cache_dir() -> Path:
    """Download cache: ``$GHNAS_CACHE`` if set, else ``~/.cache/ghnas`` (the cache root
    shared with the dataset cache, ``ghnas.data.cache_dir()``, which lives under ``data/``)."""
    from .._util import cache_root

    return cache_root()


def asset_dir() -> Path:
    """The package's data folder ``ghnas/assets`` (GHNs shipped with ghnas live here)."""
    return Path(str(resources.files("ghnas").joinpath("assets")))


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob SHA-1 of a file (equals ``git hash-object path``)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(entry: GHNEntry) -> Path:
    assert entry.url is not None and entry.git_sha1 is not None
    dest = cache_dir() / os.path.basename(entry.url.split("?")[0])
    if dest.exists():
        if git_blob_sha1(dest) == entry.git_sha1:
            return dest
        warnings.warn(f"cached file {dest} does not match the expected hash of {entry.name!r}; downloading it again")
    with atomic_path(dest) as tmp:  # replaces dest only if the download is complete and verified
        with open(tmp, "wb") as f:
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as r:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        f.write(chunk)
            except OSError as e:
                raise RuntimeError(f"could not download GHN {entry.name!r} from {entry.url}: {e}. Download the "
                                   f"file by hand and pass its path to load_ghn()") from e
            f.flush()
            os.fsync(f.fileno())
        got = git_blob_sha1(tmp)
        if got != entry.git_sha1:
            raise ValueError(f"downloaded file for GHN {entry.name!r} from {entry.url} has git blob SHA-1 {got}, "
                             f"expected {entry.git_sha1}; the file is corrupt or was changed upstream")
    return dest


def resolve_ghn(name_or_path: str | os.PathLike) -> Path:
    """Local file of a registered GHN name (downloading it if needed) or an existing path."""
    key = str(name_or_path)
    if key in _REGISTRY:
        entry = _REGISTRY[key]
        if entry.asset is not None:
            path = asset_dir() / entry.asset
            if not path.exists():
                raise FileNotFoundError(f"GHN {key!r} should be shipped as ghnas/assets/{entry.asset}, "
                                        f"but that file is missing from the installed package")
            return path
        return _download(entry)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no GHN checkpoint file {str(path)!r} and no registered GHN of that name; "
                                f"known names: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a GHN checkpoint file")
    return path


# --------------------------------------------------------------------------- save / load
def save_ghn(ghn: GHN2, path: str | os.PathLike, epoch: int = 0,
             optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None) -> Path:
    """Write ``ghn`` in ppuda's checkpoint format, atomically (temp file + rename).

    ppuda's ``GHN.load`` reads the result (unless ``ghn.ve_cutoff`` is neither 1 nor 50,
    which needs the extra config key ``ve_cutoff``).

    Example:
        >>> import tempfile, os, ghnas
        >>> from ghnas.ghn import save_ghn
        >>> p = os.path.join(tempfile.mkdtemp(), 'ghn.pt')
        >>> _ = save_ghn(ghnas.GHN2(hid=8, max_shape=(16, 16, 11, 11)), p)
        >>> ghnas.load_ghn(p).hid
        8
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        opt_state: Any = optimizer.state_dict()
    else:
        opt_state = dict(optimizer) if optimizer is not None else {}
    state = OrderedDict((k, v.detach().cpu()) for k, v in ghn.state_dict().items())
    payload = {"state_dict": state, "optimzer": opt_state, "epoch": int(epoch), "config": ghn.config}
    if not ghn.shape_enc.warn_unknown:  # an extra top-level key: ppuda's loader ignores it
        payload[META_TRAINED_KEY] = True
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` and check its layout."""
    # not ghnas._io.load_checkpoint: these messages speak of ppuda's format, which users meet here
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt / non-torch / unsafe files
        raise ValueError(f"{str(path)!r} is not a readable GHN checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "config" not in ckpt:
        have = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{str(path)!r} is not a GHN checkpoint: expected a dict with 'state_dict' and "
                         f"'config' (ppuda's format), found {have}")
    if not isinstance(ckpt["state_dict"], Mapping):
        raise ValueError(f"{str(path)!r}: 'state_dict' must be a dict of tensors, "
                         f"got {type(ckpt['state_dict']).__name__}")
    return dict(ckpt)


def check_finite(tensors: Mapping[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the first floating tensor of ``tensors`` that holds a
    NaN or an infinity (a diverged or tampered GHN predicts garbage silently otherwise)."""
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) \
                and v.device.type != "meta" and not bool(torch.isfinite(v).all()):
            n_bad = int((~torch.isfinite(v)).sum())
            raise ValueError(f"{what}: tensor {k!r} holds {n_bad} non-finite value(s) (NaN or inf) of "
                             f"{v.numel()}; the GHN is unusable (diverged training or a damaged file)")


def check_ghn_weights(ghn: torch.nn.Module, what: str = "GHN") -> torch.nn.Module:
    """``ghn`` itself if all its parameters and buffers are finite, else ``ValueError``."""
    check_finite(ghn.state_dict(), what)
    return ghn


def _short(obj: Any) -> str:
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict = 40, 40, 6, 10
    return r.repr(obj)


def _check_state(path: Path, config: Any, state: Mapping[str, Any]) -> None:
    """Compare ``state`` with the tensors a GHN of ``config`` has, before building one.

    The GHN is built on the meta device (shapes only, no memory), after
    :func:`~ghnas.ghn.model.config_kwargs` has bounded the config: a crafted config
    fails here in milliseconds instead of allocating what it asks for.
    """
    try:
        with torch.device("meta"):
            skeleton = GHN2.from_config(config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: {e}") from e
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [str(k)[:60] for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        raise ValueError(f"{str(path)!r} does not match a GHN with config {_short(config)}: " + "; ".join(parts))
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{str(path)!r}: state_dict[{k!r}] is a {type(v).__name__}, not a tensor")
        if v.layout != torch.strided or not v.is_floating_point():
            raise ValueError(f"{str(path)!r}: state_dict[{k!r}] is a {v.layout} {v.dtype} tensor; "
                             f"a GHN holds dense floating-point tensors only")
        if tuple(v.shape) != expected[k]:
            raise ValueError(f"{str(path)!r}: state_dict[{k!r}] has shape {tuple(v.shape)}, expected "
                             f"{expected[k]} for config {_short(config)}")
    check_finite(state, repr(str(path)))


def load_ghn(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> GHN2:
    """Load a GHN by registered name (see :func:`available_ghns`) or checkpoint path.

    Builds :class:`GHN2` from the checkpoint's ``config`` and loads ``state_dict``
    strictly. The GHN is returned in eval mode on ``device``.

    What a checkpoint file can do: it is read with ``weights_only=True`` (no code runs),
    its config is bounded (:func:`~ghnas.ghn.model.config_kwargs`) and compared with the
    state dict's keys and shapes before anything is allocated, and NaN/inf weights are
    refused, each with a ``ValueError`` naming the file. A valid but badly trained GHN
    still loads: its predictions are only as good as its training.

    Example:
        >>> import ghnas, torchvision
        >>> ghn = ghnas.load_ghn('ghn2-cifar10')  # doctest: +SKIP
        >>> net = ghn(torchvision.models.resnet50(num_classes=10))  # doctest: +SKIP
    """
    path = resolve_ghn(name_or_path)
    ckpt = read_checkpoint(path, "cpu")
    state = {k: v for k, v in ckpt["state_dict"].items() if k not in _IGNORED_KEYS}
    _check_state(path, ckpt["config"], state)
    ghn = GHN2.from_config(ckpt["config"])
    ghn.load_state_dict(state, strict=True)
    ghn.epoch = ckpt.get("epoch")
    ghn.shape_enc.warn_unknown = not ckpt.get(META_TRAINED_KEY, False)
    return ghn.to(device).eval()
