"""The package's own sliding window, pooled Dice and HD95 against MONAI, the field's reference
implementations (MONAI is a dev-only extra: `pip install -e ".[dev]"`; never imported by the
package). model.py must import only torch, so these stay the package's own code; this file is
what says they compute what the field computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

monai = pytest.importorskip("monai")
# MONAI's own HausdorffDistanceMetric passes a deprecated argument to itself (MONAI 1.5+)
pytestmark = pytest.mark.filterwarnings("ignore:monai.metrics.utils get_mask_edges:FutureWarning")

from monai.inferers import sliding_window_inference  # noqa: E402
from monai.metrics import ConfusionMatrixMetric, HausdorffDistanceMetric  # noqa: E402

from nas_attn.architecture.description import AttnSpec as A  # noqa: E402
from nas_attn.architecture.description import UNetArch  # noqa: E402
from nas_attn.models.infer import predict_logits  # noqa: E402
from nas_attn.models.sliding import sliding_window_predict  # noqa: E402
from nas_attn.inference.metrics import MetricAccumulator, hd95  # noqa: E402
from nas_attn.architecture.builder import build_unet  # noqa: E402


def _net(dims: int) -> torch.nn.Module:
    arch = UNetArch(spatial_dims=dims, depth=2, widths=(4, 6, 8), classes=3,
                    encoder=(A.make("se", reduction=2), None), skip=(None, A.make("gate")))
    torch.manual_seed(0)
    model = build_unet(arch)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # residual gammas start at 0: make every part count
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


CASES = [  # dims, image size (odd, not multiples of the patch), patch, overlap
    (2, (45, 38), (16, 16), 0.25),
    (2, (40, 29), (15, 12), 0.5),
    (2, (12, 30), (16, 16), 0.25),   # smaller than the patch on one axis: padded
    (3, (19, 13, 22), (8, 8, 8), 0.25),
    (3, (17, 9, 12), (8, 6, 8), 0.5),
]


@pytest.mark.parametrize("dims,size,patch,overlap", CASES)
def test_sliding_window_equals_monai_gaussian(dims, size, patch, overlap):
    model = _net(dims)
    x = torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = sliding_window_inference(x, patch, 3, model, overlap=overlap, mode="gaussian",
                                        sigma_scale=0.125)
    ours = sliding_window_predict(model, x, patch, overlap=overlap, batch=3)
    assert ours.shape == want.shape
    assert float(want.abs().max()) > 0.1  # a real signal, not two zero maps
    assert float((ours - want).abs().max()) <= 1e-5
    # what predict / evaluate / validation call (and model.py copies)
    got, _ = predict_logits(model, x, patch_size=patch, overlap=overlap, batch=3)
    assert float((got - want).abs().max()) <= 1e-5


def _split(dims: int, classes: int = 4, seed: int = 0):
    """Label maps of several shapes; class 3 appears in no reference and no prediction."""
    rng = np.random.default_rng(seed)
    shapes = [(20, 17), (13, 24), (16, 16)] if dims == 2 else [(8, 9, 7), (6, 10, 8)]
    preds, refs = [], []
    for shape in shapes:
        ref = rng.integers(0, classes - 1, size=shape)
        pred = np.where(rng.random(shape) < 0.7, ref, rng.integers(0, classes - 1, size=shape))
        preds.append(pred)
        refs.append(ref)
    refs[0][refs[0] == 2] = 0  # a class missing from one image's reference only
    return preds, refs


def _onehot(labels: np.ndarray, classes: int) -> torch.Tensor:
    t = torch.as_tensor(labels).long()
    return torch.nn.functional.one_hot(t, classes).movedim(-1, 0)[None].float()


@pytest.mark.parametrize("dims", [2, 3])
def test_pooled_dice_equals_monai_confusion_matrix_over_the_split(dims):
    classes = 4
    preds, refs = _split(dims, classes)
    acc = MetricAccumulator(classes)
    metric = ConfusionMatrixMetric(include_background=False, metric_name="f1 score",
                                   compute_sample=False, reduction="sum_batch")
    for p, r in zip(preds, refs):
        acc.add(p, r)
        metric(y_pred=_onehot(p, classes), y=_onehot(r, classes))
    ours = acc.result()
    want = metric.aggregate()[0].numpy()  # per class, confusion matrices summed over images
    assert want.shape == (classes - 1,)
    got = np.array([np.nan if v is None else v for v in ours["dice_per_class"]])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want[2])  # absent from both everywhere: left out, not counted as 1
    np.testing.assert_allclose(got[:2], want[:2], rtol=0, atol=1e-6)
    assert abs(ours["dice"] - float(np.nanmean(want))) <= 1e-6


def _blobs(shape, seed: int) -> np.ndarray:
    """Two-class label map of random boxes (foreground away from nothing in particular)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.int64)
    for k in (1, 2):
        for _ in range(2):
            lo = [int(rng.integers(0, s - 3)) for s in shape]
            hi = [int(rng.integers(a + 2, s + 1)) for a, s in zip(lo, shape)]
            out[tuple(slice(a, b) for a, b in zip(lo, hi))] = k
    return out


@pytest.mark.parametrize("dims,spacing", [(2, None), (2, (0.7, 1.9)), (3, None),
                                          (3, (2.5, 0.8, 1.1))])
def test_hd95_equals_monai_hausdorff_percentile_95(dims, spacing):
    shape = (31, 26) if dims == 2 else (14, 12, 15)
    checked = 0
    for seed in range(4):
        pred, ref = _blobs(shape, seed), _blobs(shape, seed + 100)
        metric = HausdorffDistanceMetric(include_background=False, percentile=95)
        kw = {} if spacing is None else {"spacing": list(spacing)}
        want = metric(y_pred=_onehot(pred, 3), y=_onehot(ref, 3), **kw)[0].numpy()
        for c in (1, 2):
            if not (pred == c).any() or not (ref == c).any():
                continue  # an empty side: MONAI gives inf/nan, the package the diagonal
            got = hd95(pred == c, ref == c, spacing)
            assert got > 0
            assert abs(got - float(want[c - 1])) <= 1e-5 * max(1.0, got)
            checked += 1
    assert checked >= 6
