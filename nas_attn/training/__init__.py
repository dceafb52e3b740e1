"""Training: config, losses, the loop, writing checkpoints and previews.

`train(arch, train_data, val_data, data_cfg, cfg)` is the entry point. What it writes is read
back by `nas_attn.inference` (`inference.checkpoint.load_checkpoint`), and the score it
validates with is `nas_attn.inference.metrics`.
"""
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .losses import DiceCELoss, SegLoss, deep_supervision_weights
from .loop import StepInfo, TrainResult, evaluate, get_loaders, train

__all__ = [
    "DiceCELoss", "SegLoss", "StepInfo", "TrainConfig", "TrainResult",
    "deep_supervision_weights", "evaluate", "get_loaders", "save_checkpoint", "train",
]
