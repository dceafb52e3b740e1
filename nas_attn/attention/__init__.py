"""Attention modules, one file per family; importing this package fills the registry."""
from . import registry
from .registry import AttentionInfo, create_attention, get_info, names, register

from . import channel, spatial, gate, dual, cross, selfattn, timm_modules  # noqa: E402,F401  (fill the registry)

__all__ = ["AttentionInfo", "create_attention", "get_info", "names", "register", "registry"]
