"""Data: dataset folders and the built-in cue set, decoded once (into memory, or for 3D folders
into the preprocessed cache on disk), split, patched, augmented and tiled back together.

- `segdata`  : `SegData`, the in-memory sample container
- `readers`  : file formats, channel-axis rule, normalisation, mask value rules
- `check`    : `FolderReport` and the one-pass folder validation / decoding
- `folder`   : `load_folder`, `check_folder` (cached per process)
- `layouts`  : nnU-Net v2 raw and Decathlon folders; `split_files`: a folder's own split lists
- `resample` : one voxel spacing (the median) for training, predictions back on the input grid
- `cache`    : the preprocessed cache on disk, read patch by patch (3D folders)
- `builtin`  : `make_builtin`, the seeded context-dependent synthetic set
- `config`   : `DataConfig`, `AugmentConfig`
- `split`    : `load_data` (train/val split, cached), `load_test` (the test split)
- `augment`  : `build_augment` (albumentations 2, 2D and 3D), `plan_symmetry` (label-safe flips)
- `loaders`  : `make_loaders` (patch sampler with foreground oversampling)
- `sliding_window_predict` (from `nas_attn.models.sliding`)
"""

from ..models.sliding import sliding_window_predict
from .augment import build_augment
from .builtin import make_builtin
from .config import AugmentConfig, DataConfig
from .folder import check_folder, load_folder
from .loaders import make_loaders, symmetry_plan
from .report import FolderReport
from .segdata import SegData
from .split import clear_cache, load_data, load_test

__all__ = [
    "AugmentConfig", "DataConfig", "FolderReport", "SegData", "build_augment", "check_folder",
    "clear_cache", "load_data", "load_test", "load_folder", "make_builtin", "make_loaders",
    "sliding_window_predict", "symmetry_plan",
]
