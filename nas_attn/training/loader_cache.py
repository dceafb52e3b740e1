"""The data loaders of a process, memoised: trials with the same data, data configuration, batch
size and seed reuse their loaders (and persistent workers) instead of building them again."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

_LOADERS: "OrderedDict[tuple, tuple]" = OrderedDict()
_LOADER_CACHE_SIZE = 4


def cfg_key(cfg: Any) -> str:
    dump = getattr(cfg, "model_dump_json", None)
    return dump() if callable(dump) else repr(cfg)


def get_loaders(train_data, val_data, data_cfg, *, batch_size: int, seed: int,
                device_is_cuda: bool = False, samples_per_epoch: int | None = None):
    """`make_loaders(...)`, memoised per process: trials with the same data, data config, batch
    size and seed reuse the loaders (and their persistent workers) instead of rebuilding them.
    The cache holds the data objects, so their ids stay valid while cached."""
    from ..data import make_loaders

    key = (id(train_data), id(val_data), cfg_key(data_cfg), batch_size, seed, device_is_cuda,
           samples_per_epoch)
    hit = _LOADERS.get(key)
    if hit is not None:
        _LOADERS.move_to_end(key)
        _reseed(hit[2][0], seed)
        return hit[2]
    loaders = make_loaders(train_data, val_data, data_cfg, batch_size=batch_size, seed=seed,
                           device_is_cuda=device_is_cuda, samples_per_epoch=samples_per_epoch)
    _LOADERS[key] = (train_data, val_data, loaders)
    while len(_LOADERS) > _LOADER_CACHE_SIZE:
        _LOADERS.popitem(last=False)
    return loaders


def _reseed(loader, seed: int) -> None:
    """Restart a reused train loader's random streams, so a trial draws the same patches as in
    a fresh process: the shuffling generator, and the dataset's own (`reseed(seed)`) if it
    offers one. (Persistent worker processes keep their own streams.)"""
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(int(seed))
    reseed = getattr(getattr(loader, "dataset", None), "reseed", None)
    if callable(reseed):
        reseed(seed)
