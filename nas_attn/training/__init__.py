"""Training: config, losses, metrics, the loop, checkpoints and previews.

`train(arch, train_data, val_data, data_cfg, cfg)` is the entry point; `load_checkpoint(path)`
reads back what it wrote.
"""
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import DiceCELoss, SegLoss, deep_supervision_weights
from .loop import StepInfo, TrainResult, evaluate, get_loaders, train
from .metrics import MetricAccumulator, dice_iou_per_class, hd95

__all__ = [
    "CheckpointError", "DiceCELoss", "MetricAccumulator", "SegLoss", "StepInfo", "TrainConfig",
    "TrainResult", "deep_supervision_weights", "dice_iou_per_class", "evaluate", "get_loaders",
    "hd95", "load_checkpoint", "read_checkpoint", "save_checkpoint", "train",
]
