"""Writing small NIfTI volumes for the tests (a helper module, not a test file)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_nifti(path: Path, arr: np.ndarray, spacing) -> None:
    """`arr` as a NIfTI file with the voxel spacing `spacing` (mm) in its affine and header."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*spacing, 1.0]))
    img.header.set_zooms(tuple(spacing) + img.header.get_zooms()[len(spacing):])
    nib.save(img, str(path))
