"""Training package: metrics, losses, the loop and its failure paths, checkpoints, previews, CLI.

Tiny and CPU-only: 32² images, widths 4–8, a few optimizer steps per run.
"""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nas_attn.architecture.description import UNetArch
from nas_attn.data import DataConfig, SegData, load_data, make_loaders
from nas_attn.device import Runtime
from nas_attn.errors import ArchError, DivergedError, OutOfMemoryError, TrainingError
from nas_attn.inference.checkpoint import load_checkpoint
from nas_attn.inference.metrics import MetricAccumulator, dice_iou_per_class, hd95
from nas_attn.training import DiceCELoss, SegLoss, TrainConfig, deep_supervision_weights, train
from nas_attn.inference.checkpoint import CheckpointError, read_checkpoint
from nas_attn.training.preview import save_preview

CPU = Runtime(device=torch.device("cpu"))
TINY = dict(depth=2, widths=(4, 8, 8))


def discs(n: int, size: int = 32, seed: int = 0, nan: bool = False) -> SegData:
    """Bright discs on a noisy background: an easy binary task."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(4, 8)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.int64)
        img = (0.3 + 0.4 * m + 0.05 * rng.standard_normal((size, size))).astype(np.float32)[None]
        if nan:
            img[0, 0, 0] = np.nan
        images.append(img)
        masks.append(m)
    return SegData(images=images, masks=masks, names=[f"disc{i}" for i in range(n)],
                   spatial_dims=2, in_channels=1, classes=2)


NO_AUG = {"flips": False, "rot90": False, "affine": False, "intensity": False}
DCFG = DataConfig(patch_size=[32], augment=NO_AUG)


@pytest.fixture(scope="module")
def disc_data():
    return discs(16), discs(3, seed=1)


def fast_cfg(**kw):
    base = dict(epochs=2, batch_size=4, samples_per_epoch=8, warmup_epochs=0.5, device="cpu")
    return TrainConfig(**{**base, **kw})


# ----- metrics ---------------------------------------------------------------------------------
def test_dice_iou_hand_computed_binary():
    gt = np.zeros((4, 4), int)
    gt[:2, :2] = 1                 # 4 pixels
    pred = np.zeros((4, 4), int)
    pred[:2, :3] = 1               # 6 pixels, 4 overlap
    dice, iou = dice_iou_per_class(pred, gt, classes=2)
    assert dice == [pytest.approx(2 * 4 / 10)]
    assert iou == [pytest.approx(4 / 6)]


def test_hd95_simple_shift():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 2, axis=1)
    assert hd95(a, b) == pytest.approx(2.0)
    assert hd95(a, a) == 0.0
    empty = np.zeros_like(a)
    assert math.isnan(hd95(empty, empty))   # absent from both: left out, not a perfect 0
    assert hd95(a, empty) == pytest.approx(math.hypot(20, 20))


# ----- losses -----------------------------------------------------------------------------------
def test_loss_small_for_perfect_and_large_for_wrong_prediction():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    perfect = (target[:, None].float() * 2 - 1) * 20
    loss = DiceCELoss(1)
    assert loss(perfect, target) < 1e-3
    assert loss(-perfect, target) > 1.5
    # multi-class: three classes, softmax + CE
    t3 = target.clone()
    t3[:, 0, :] = 2
    logits = torch.nn.functional.one_hot(t3, 3).movedim(-1, 1).float() * 30
    assert DiceCELoss(3)(logits, t3) < 1e-3
    assert DiceCELoss(3)(logits.flip(1), t3) > 1.0
    # Dice only: an empty target with an empty prediction is perfect (smoothed Dice)
    empty = torch.zeros_like(target)
    assert DiceCELoss(1, ce_weight=0)(torch.full((2, 1, 8, 8), -30.0), empty) < 1e-3


def test_deep_supervision_loss_resizes_targets():
    w = deep_supervision_weights(3, 1.0)
    assert w == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75])
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    full = (target[:, None].float() * 2 - 1) * 20
    half = torch.nn.functional.interpolate(full, size=(4, 4), mode="nearest")
    loss = SegLoss(1)
    assert loss([full, half], target) < 1e-3
    assert loss([full, -half], target) > 0.3


# ----- the loop ---------------------------------------------------------------------------------
def test_tiny_training_lowers_loss_and_reports_metrics(disc_data, tmp_path):
    tr, va = disc_data
    seen = []
    steps = []
    res = train(UNetArch(**TINY), tr, va, DCFG, fast_cfg(epochs=4, samples_per_epoch=16),
                on_epoch=lambda e, m: seen.append((e, m)), progress=steps.append,
                out_dir=tmp_path)
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and [e for e, _ in seen] == [1, 2, 3, 4]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    for key in ("epoch", "train_loss", "val_loss", "dice", "iou", "dice_per_class",
                "iou_per_class", "lr", "time", "epoch_s", "images_per_s"):
        assert key in h[0], key
    assert set(seen[0][1]) == set(h[0])
    assert res.best["dice"] == max(r["dice"] for r in h)
    assert 0 <= res.best["dice"] <= 1 and res.images_per_s > 0 and res.steps == 16
    assert steps and steps[-1].global_step == 16 and steps[-1].total_steps == 16
    assert res.stop_reason == "epochs"
    assert (tmp_path / "best.pt").exists() and (tmp_path / "preview.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    # warm-up then cosine decay to 1 % of the peak
    lrs = [r["lr"] for r in h]
    peak = TrainConfig().lr
    assert lrs[-1] == pytest.approx(peak * 0.01, rel=1e-3) and max(lrs) <= peak + 1e-12


def test_builtin_multiclass_with_real_loaders_deep_supervision_and_ema():
    dcfg = DataConfig(source="builtin", builtin_n=6, builtin_size=32, patch_size=[32])
    tr, va = load_data(dcfg)
    arch = UNetArch(classes=tr.classes, deep_supervision=True, **TINY)
    res = train(arch, tr, va, dcfg, fast_cfg(ema=True, optimizer="sgd", lr=0.01,
                                            schedule="poly"))
    assert len(res.best["dice_per_class"]) == tr.classes - 1
    assert all(np.isfinite(r["train_loss"]) for r in res.history)
    assert not res.model.training
    # the returned model holds the best (EMA) weights: evaluating it reproduces the best Dice
    from nas_attn.training import evaluate

    _, val_loader = make_loaders(tr, va, dcfg, batch_size=4, seed=0)
    again = evaluate(res.model, val_loader, CPU, classes=tr.classes)
    assert again["dice"] == pytest.approx(res.best["dice"], abs=1e-6)


def test_nan_loss_raises_diverged(disc_data):
    tr, va = discs(8, nan=True), disc_data[1]
    with pytest.raises(DivergedError, match=r"epoch 1, step 1 .*lower lr"):
        train(UNetArch(**TINY), tr, va, DCFG, fast_cfg())


def test_oom_is_mapped(monkeypatch, disc_data):
    from nas_attn.architecture import builder as unet

    def boom(self, x, aux=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(unet.UNet, "forward_all", boom)
    with pytest.raises(OutOfMemoryError, match="out of memory.*batch_size 4.*smaller batch_size"):
        train(UNetArch(**TINY), *disc_data, DCFG, fast_cfg())


def test_on_epoch_exception_propagates(disc_data, tmp_path):
    class Pruned(Exception):
        pass

    calls = []

    def on_epoch(epoch, metrics):
        calls.append(epoch)
        assert "dice" in metrics and metrics["hd95"] >= 0
        if epoch == 2:
            raise Pruned("stop here")

    with pytest.raises(Pruned):
        train(UNetArch(**TINY), *disc_data, DCFG, fast_cfg(epochs=3, hd95=True),
              on_epoch=on_epoch, out_dir=tmp_path)
    assert calls == [1, 2]
    assert (tmp_path / "best.pt").exists()  # the best so far is kept


def test_time_budget_stops_and_val_every(disc_data, monkeypatch):
    # A fake clock that advances 10 ms per reading: the budget runs out after a fixed
    # number of steps on any machine (a real clock made this pass or fail by CPU speed).
    import types

    import nas_attn.training.loop as loop

    clock = iter(range(10**9))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(
        perf_counter=lambda: next(clock) * 0.01))
    res = train(UNetArch(**TINY), *disc_data, DCFG,
                fast_cfg(epochs=50, max_time_s=0.5, val_every=3, samples_per_epoch=4))
    assert res.stop_reason == "time" and 4 <= len(res.history) < 50
    assert "dice" in res.history[-1]  # the last epoch is always evaluated
    assert all(("dice" in r) == (r["epoch"] % 3 == 0) for r in res.history[:-1])
    assert res.history[-1]["lr"] < TrainConfig().lr * 0.5  # time-driven schedule has annealed


def test_checkpoint_roundtrip(disc_data, tmp_path):
    tr, va = disc_data
    arch = UNetArch(**TINY)
    res = train(arch, tr, va, DCFG, fast_cfg(), out_dir=tmp_path)
    raw = torch.load(res.checkpoint, weights_only=True)
    assert set(raw) == {"format", "arch", "state_dict", "meta"}
    assert UNetArch.from_json(raw["arch"]) == arch
    arch2, model2, meta = load_checkpoint(res.checkpoint)
    assert arch2 == arch and meta["metrics"]["dice"] == res.best["dice"]
    assert meta["epoch"] == res.best["epoch"]
    # hand-built data (not normalised by load_data) reached the model as it is: replayed as such
    assert tr.normalisation is None and meta["inference"]["normalisation"] == "none"
    assert res.inference.normalisation == "none"
    x = torch.from_numpy(va.images[0])[None]
    with torch.no_grad():
        assert torch.allclose(model2(x), res.model(x), atol=1e-6)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")


def test_preview_png(disc_data, tmp_path):
    tr, va = disc_data
    model = UNetArch(**TINY)
    from nas_attn.architecture.builder import build_unet

    path = save_preview(build_unet(model).eval(), va, tmp_path / "p.png", CPU, n=4)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.width >= 3 * 256 and im.height >= 256  # 3 tiles of ~256 px + legend


def test_3d_training_and_preview(tmp_path):
    dcfg = DataConfig(source="builtin3d", builtin_n=3, builtin_size=16, patch_size=[16])
    tr, va = load_data(dcfg)
    arch = UNetArch(spatial_dims=3, classes=tr.classes, depth=1, widths=(4, 8))
    res = train(arch, tr, va, dcfg, fast_cfg(epochs=1, batch_size=2, samples_per_epoch=2),
                out_dir=tmp_path)
    assert 0 <= res.best["dice"] <= 1
    with Image.open(tmp_path / "preview.png") as im:
        assert im.width > 0


def test_config_validation_messages():
    with pytest.raises(TrainingError, match=r"lr: .*greater than 0.*\(got -1"):
        TrainConfig.make(lr=-1)
    with pytest.raises(TrainingError, match=r"optimiser: unknown field; accepted: epochs"):
        TrainConfig.make(optimiser="adam")
    with pytest.raises(TrainingError, match=r"schedule: .*'cosine', 'poly' or 'constant'"):
        TrainConfig.make(schedule="step")
    with pytest.raises(TrainingError, match="dice_weight and ce_weight are both 0"):
        TrainConfig.make(dice_weight=0, ce_weight=0)
    assert TrainConfig.make(epochs=1).warmup_epochs == 5.0  # capped when scheduling instead



@pytest.mark.parametrize("n_train,spe,batch", [(16, None, 4), (16, 10, 4), (3, None, 4),
                                               (16, 2, 4), (5, None, 1)])
def test_resolved_steps_per_epoch_is_the_loaders_length(n_train, spe, batch):
    """Phase 1's warm-up counts steps before any loader exists: the count must be the
    training loader's length (full batches; one partial batch when no full one exists)."""
    tr = discs(n_train)
    cfg = fast_cfg(samples_per_epoch=spe, batch_size=batch)
    n = cfg.resolved_samples_per_epoch(len(tr))
    loader, _ = make_loaders(tr, discs(2, seed=1), DCFG, batch_size=batch, seed=0,
                             samples_per_epoch=n)
    assert cfg.resolved_steps_per_epoch(len(tr)) == len(loader)
    assert fast_cfg(steps_per_epoch=3).resolved_steps_per_epoch(len(tr)) == 3

# ----- CLI helper -------------------------------------------------------------------------------
def test_run_train_adapts_arch_and_writes_outputs(tmp_path):
    from rich.console import Console

    from nas_attn.api import plan_training
    from nas_attn.cli.train import run_train

    arch_file = tmp_path / "arch.json"
    arch_file.write_text(UNetArch(classes=2, **TINY).to_json())
    console = Console(record=True, width=140)
    plan = plan_training(arch_file, "builtin", epochs=1, out_dir=tmp_path / "out", device="cpu",
                         train_options=dict(batch_size=4, samples_per_epoch=4, warmup_epochs=0),
                         data_options=dict(builtin_n=5, builtin_size=32, patch_size=[32]))
    assert plan.changes == ["classes 2 → 3"] and plan.arch.classes == 3
    res = run_train(plan, console)
    text = console.export_text()
    assert "adapted the architecture to the data" in text and "classes 2 → 3" in text
    assert "Training summary" in text and "val Dice" in text
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["dice"] == pytest.approx(res.best["dice"])
    assert metrics["arch"]["classes"] == 3 and len(metrics["history"]) == 1
    assert (out / "best.pt").exists() and (out / "preview.png").exists()


def test_run_train_bad_arch_file(tmp_path):
    import nas_attn as na

    with pytest.raises(ArchError, match="does not exist"):
        na.train(tmp_path / "missing.json", "builtin", epochs=1, out_dir=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match=r"bad\.json: architecture is not valid JSON"):
        na.train(bad, "builtin", epochs=1, out_dir=tmp_path)


def test_dice_ce_loss_on_a_batch_with_an_absent_class():
    """Pinned: the batch soft Dice averages every foreground class, and a class absent from the
    whole batch scores (0 + 1) / (sum of its probabilities + 1): predicting nothing of it is
    rewarded, predicting it is penalised (CE penalises it too)."""
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1                               # class 2 absent from the batch
    onehot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    loss = DiceCELoss(3, ce_weight=0)
    assert loss(onehot * 30, target) < 1e-3               # class 2 not predicted: Dice 1 for it
    wrong = onehot.clone()
    wrong[:, 2, 0, :] = 1.0                               # predict class 2 on one row per image
    wrong[:, 0, 0, :] = 0.0
    expected = 0.5 * (1 - 1 / (16 + 1))                   # class 1 perfect, class 2: 1 / (16 + 1)
    assert abs(float(loss(wrong * 30, target)) - expected) < 1e-3
