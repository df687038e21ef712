"""GHN-2 graph hypernetworks: the model, batched prediction, ppuda-compatible checkpoints.

Example:
    >>> import ghnas, torchvision
    >>> ghn = ghnas.load_ghn('ghn2-cifar10')  # doctest: +SKIP
    >>> net = ghn(torchvision.models.resnet50(num_classes=10))  # doctest: +SKIP
    >>> params = ghn.predict([net, net])  # list of {name: tensor}, one GHN pass  # doctest: +SKIP
"""
from .batch import GraphBatch, decoder_key
from .hub import (GHNEntry, available_ghns, cache_dir, ghn_entry, git_blob_sha1, load_ghn,
                  read_checkpoint, register_ghn, resolve_ghn, save_ghn)
from .model import GHN2, normalize, tile_to
from .ref import GHNRef, default_ghn_name

__all__ = [
    "GHN2", "GHNRef", "GraphBatch", "GHNEntry", "default_ghn_name", "load_ghn", "save_ghn", "register_ghn", "available_ghns", "ghn_entry",
    "resolve_ghn", "read_checkpoint", "cache_dir", "git_blob_sha1", "decoder_key", "normalize", "tile_to",
]
