"""The zero-cost proxy interface and the proxy registry.

A *proxy* scores an untrained network so that better architectures get better scores.
Every proxy is a small subclass of :class:`Proxy` (one file per family, like Optuna's
samplers): it says whether higher is better, whether it needs a data batch, and how to
score one ``nn.Module``. Proxies that can do better than one network at a time (the GHN
proxy predicts parameters for many architectures in one call) override
:meth:`Proxy.score_archs` instead.

Example::

    >>> import torch
    >>> from ghnas.proxies import get_proxy
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10))
    >>> get_proxy("params").score(net, None)   # millions of parameters
    0.00013
"""
from __future__ import annotations

import abc
import contextlib
import copy
import hashlib
import importlib
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
import torch.nn as nn

Batch = tuple[torch.Tensor, torch.Tensor]
#: called as ``callback(index, score, seconds)`` each time one architecture is scored
ResultCallback = Callable[[int, float, float], None]

__all__ = [
    "Batch",
    "Proxy",
    "register_proxy",
    "get_proxy",
    "available_proxies",
    "arch_seed",
    "logits_of",
    "one_batch",
    "weighted_layers",
]


class Proxy(abc.ABC):
    """Base class of all zero-cost proxies.

    Subclasses set the class attributes and implement :meth:`score`. Constructor
    arguments are stored as public attributes; :meth:`settings` returns them and is
    part of the cache key of :func:`ghnas.proxies.score`, so two proxies with different
    settings never share cached values.

    Contract of :meth:`score`: it returns one float (``nan`` when the network is
    degenerate, e.g. its output does not depend on its input) and leaves ``model``
    as it found it (parameters, buffers, gradients, train/eval mode).

    A proxy that scores many architectures at once (the GHN proxy) overrides
    :meth:`score_archs`, returns one score per architecture, and may call
    ``callback(i, score, seconds)`` as each one is ready (progress bar and resumable
    cache of :func:`~ghnas.proxies.score`).

    Example, a new proxy::

        >>> from ghnas.proxies import Proxy, register_proxy, score
        >>> @register_proxy("n_convs", overwrite=True)
        ... class NumConvs(Proxy):
        ...     needs_data = False
        ...     def score(self, model, batches):
        ...         return float(sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()))
        >>> arch = '|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|'
        >>> score([arch], 'nb201', 'n_convs', build_kwargs={'N': 1}, progress=False).scores
        [10.0]
    """

    #: registry name, set by :func:`register_proxy`
    name: ClassVar[str] = ""
    #: whether a larger score predicts a better architecture
    higher_is_better: ClassVar[bool] = True
    #: whether :meth:`score` reads the data batches (``False``: ``batches`` may be None)
    needs_data: ClassVar[bool] = True
    #: images in the data batch when the caller does not choose (the batch size of the
    #: proxy's reference implementation)
    default_batch_size: ClassVar[int] = 64
    #: whether the proxy predicts parameters with a GHN (and so takes ``ghn=``, see
    #: :meth:`use_ghn`)
    needs_ghn: ClassVar[bool] = False

    def use_ghn(self, ghn: Any) -> None:
        """Give the proxy the GHN it predicts parameters with (a name, path, ``GHN2`` or
        :class:`~ghnas.ghn.GHNRef`); only proxies with ``needs_ghn`` accept one."""
        from ..errors import InputError

        raise InputError(f"ghn= is only used by GHN proxies (e.g. proxy='ghn' or 'ghn_acc'), "
                         f"not by proxy {self.name or type(self).__name__!r}")

    def settings(self) -> dict[str, Any]:
        """The proxy's configuration as plain JSON-able values (its public attributes).

        Not the batch size: results record the images they were computed on separately."""
        return {k: v for k, v in sorted(vars(self).items())
                if not k.startswith("_") and k != "default_batch_size"}

    def with_batch_size(self, batch_size: int) -> "Proxy":
        """A copy of this proxy whose ``default_batch_size`` is ``batch_size``: how a
        default aggregate gives a member the batch it was chosen with (as an ensemble
        member it then takes the first ``batch_size`` images of the shared batch)."""
        import copy

        from ..errors import InputError

        if not self.needs_data:
            raise InputError(f"proxy {self.name or type(self).__name__!r} reads no images; it has no batch size")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        new = copy.copy(self)
        new.default_batch_size = int(batch_size)  # type: ignore[misc]  # shadows the class default
        return new

    def identity(self, space: Any) -> dict[str, Any]:
        """What cached scores of this proxy in ``space`` are keyed by: its settings, plus
        any state outside them that changes the scores (a GHN proxy adds a digest of its
        GHN's weights, so a retrained checkpoint under the same name is never served
        stale scores)."""
        return self.settings()

    @abc.abstractmethod
    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        """Score one network. ``batches`` is a list of ``(x, y)`` tensors on the model's device."""

    def score_archs(
        self,
        archs: Sequence[str],
        space: Any,
        batches: Sequence[Batch] | None,
        build_kwargs: dict[str, Any] | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        callback: ResultCallback | None = None,
    ) -> list[float]:
        """Score many architectures of ``space``; the default builds and scores each in turn.

        Each network is built under the torch seed :func:`arch_seed` ``(seed, hash)``,
        which depends on the architecture and the run seed only, so a score does not
        depend on the other architectures in the call or on their order. The global RNG
        state is restored afterwards.
        """
        import time

        kwargs = dict(build_kwargs or {})
        out: list[float] = []
        for i, arch in enumerate(archs):
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=_cuda_devices(device)):
                torch.manual_seed(arch_seed(seed, space.hash(arch)))
                model = space.build(arch, **kwargs)
            model = model.to(device)
            value = float(self.score(model, batches))
            seconds = time.perf_counter() - t0
            out.append(value)
            if callback is not None:
                callback(i, value, seconds)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Proxy]] = {}
# proxies defined in modules that are imported only when asked for (they may need
# extra files, like a GHN checkpoint); the module registers itself on import
#: the name of each space's default aggregate (resolved with the space, see get_proxy)
ZERO_SHOT = "zero-shot"
_LAZY: dict[str, str] = {"ghn": "ghnas.proxies.ghn", "ghn_acc": "ghnas.proxies.ghn",
                         "ghn_finetune": "ghnas.proxies.ghn_finetune"}


def register_proxy(name: str, cls: Callable[..., Proxy] | None = None, *, overwrite: bool = False):
    """Register a proxy class (or factory) under ``name``; usable as a decorator.

    >>> @register_proxy("my_proxy")        # doctest: +SKIP
    ... class MyProxy(Proxy): ...
    """
    if not name or any(c in name for c in ",+:") or name != name.strip():
        raise ValueError(f"invalid proxy name {name!r}: use a non-empty name without ',', '+' or ':'")

    def _register(c: Callable[..., Proxy]) -> Callable[..., Proxy]:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not c:
            raise ValueError(f"proxy {name!r} is already registered ({_REGISTRY[name]!r}); "
                             "pass overwrite=True to replace it")
        _REGISTRY[name] = c
        if isinstance(c, type) and issubclass(c, Proxy) and not c.__dict__.get("name"):
            c.name = name
        return c

    return _register if cls is None else _register(cls)


def available_proxies() -> list[str]:
    """Names accepted by :func:`get_proxy` (ensembles are written ``'vote:a,b'`` or ``'a+b'``)."""
    return sorted(set(_REGISTRY) | set(_LAZY) | {ZERO_SHOT})


def get_proxy(name: str | Proxy, space: Any = None, **kwargs: Any) -> Proxy:
    """Create a proxy by name, e.g. ``get_proxy('synflow')``, ``get_proxy('vote:synflow,params')``
    (mean rank) or ``get_proxy('logrank:meco,params')`` (AZ-NAS's log-rank aggregate).

    ``'zero-shot'``, the default aggregate of a space (:mod:`ghnas.proxies.zero_shot`),
    needs ``space``; a proxy with settings chosen per space (the GHN proxy's image count)
    takes that space's; other names ignore it. A :class:`Proxy` instance is returned
    unchanged (``kwargs`` must then be empty).
    """
    if isinstance(name, Proxy):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with a proxy name")
        return name
    if not isinstance(name, str):
        raise TypeError(f"proxy must be a name or a Proxy, not {type(name).__name__}")
    key = name.strip()
    if key == ZERO_SHOT:
        from .zero_shot import ZeroShot

        if space is None:
            from ..errors import InputError

            raise InputError("'zero-shot' is the default proxy of a space: say which (space='nb201')")
        return ZeroShot(space, **kwargs)
    made = _made_by_name(name, key, kwargs)
    if space is not None and hasattr(made, "for_space"):  # per-space settings (the GHN proxy's images)
        made = made.for_space(space)
    return made


def _made_by_name(name: str, key: str, kwargs: dict[str, Any]) -> Proxy:
    from .ensemble import PREFIXES, Ensemble

    for method, prefix in PREFIXES.items():
        if key.startswith(prefix):  # members split by ',' or '+' ('+' fits comma-separated lists)
            members = [m.strip() for m in key[len(prefix):].replace("+", ",").split(",")]
            if len(members) < 2:
                from ..errors import InputError

                # most often a comma-separated list (--proxies a,logrank:b,c) that split an ensemble
                raise InputError(f"ensemble {name!r} names {len(members)} member; an aggregate needs two or "
                                 f"more (in a comma-separated list, join its members with '+': "
                                 f"'{prefix}{members[0] or 'a'}+b')")
            return Ensemble(members, method=method, **kwargs)
    if "+" in key:
        return Ensemble([m.strip() for m in key.split("+")], **kwargs)
    if key not in _REGISTRY and key in _LAZY:
        try:
            importlib.import_module(_LAZY[key])
        except ImportError as e:
            raise ValueError(f"proxy {key!r} is provided by {_LAZY[key]}, which could not be "
                             f"imported: {e}") from e
    if key not in _REGISTRY:
        from ..errors import InputError

        raise InputError(f"unknown proxy {name!r}; valid proxies: {', '.join(available_proxies())} "
                         "(or an ensemble such as 'synflow+params' or 'logrank:meco+params')")
    return _REGISTRY[key](**kwargs)


# --------------------------------------------------------------------------- helpers


def space_name(space: Any) -> str:
    """The name of ``space`` (a name, or a search space object), as per-space settings key it."""
    return space if isinstance(space, str) else getattr(space, "name", type(space).__name__)


def arch_seed(seed: int, arch_hash: str) -> int:
    """The torch seed a network is built with: a stable function of (run seed, architecture)."""
    digest = hashlib.sha256(f"{int(seed)}:{arch_hash}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _cuda_devices(device: str | torch.device) -> list[int]:
    dev = torch.device(device)
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (:func:`ghnas._util.first_tensor`: the tensor itself,
    or the first entry of a tuple/list; DARTS networks return ``(logits, aux_logits)``)."""
    from .._util import first_tensor

    return first_tensor(output, "the network")


def one_batch(batches: Sequence[Batch] | None, proxy: str = "this proxy") -> Batch:
    """Concatenate the given batches into one ``(x, y)`` (NASLib concatenates its batches too)."""
    if not batches:
        raise ValueError(f"{proxy} needs data: pass data=ImageData, 'sample' or a list of (x, y) batches")
    if len(batches) == 1:
        x, y = batches[0]
        return x, y
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weights the pruning-based proxies score: every Conv and Linear.

    (The reference implementations sum over ``nn.Conv2d`` and ``nn.Linear``; we also
    accept the other ``_ConvNd`` flavours so 1-d/3-d networks are not silently ignored.)
    """
    return [m for m in model.modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight is not None]


from .._util import model_device  # noqa: E402  (re-exported: the proxies import it from here)


def scratch_copy(model: nn.Module) -> nn.Module:
    """A deep copy to run a proxy on, so the caller's model is never modified."""
    return copy.deepcopy(model)


def sum_tensors(values: Iterable[torch.Tensor]) -> float:
    """Sum of the elements of several tensors, accumulated in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for v in values:
        total = total + v.detach().to(torch.float64).sum().cpu()
    return float(total)


def prepare_for_grads(model: nn.Module, batches: Sequence[Batch] | None,
                      proxy: str) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The common start of the gradient-based proxies.

    Returns a train-mode copy of ``model`` (batch statistics, as in the reference
    code), the weights of its conv/linear layers (made to require grad), and the batch.
    """
    x, y = one_batch(batches, proxy)
    net = scratch_copy(model).train()
    weights = [m.weight for m in weighted_layers(net)]
    for w in weights:
        w.requires_grad_(True)
    return net, weights, x, y


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's logits (the loss of every gradient proxy)."""
    return nn.functional.cross_entropy(logits_of(model(x)), y)


@contextlib.contextmanager
def forward_hooks(modules: Iterable[nn.Module], hook: Callable[..., Any]):
    """``hook`` as a forward hook of every module in ``modules`` while the block runs;
    removed afterwards, also when the block raises."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
