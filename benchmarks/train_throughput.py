"""Training-step throughput, data wait, FLOP efficiency and a quality check, as measured ratios.

    python benchmarks/train_throughput.py [--batch 8] [--size 128] [--rounds 10] [--steps 3]
                                          [--skip-quality] [--quality-epochs N]
                                          [--out results.json]

1. images/s of one training step (forward, Dice+CE, backward, AdamW) of the plain UNet from
   `build_unet` (depth 4, width 16) against a hand-written minimal UNet with the same widths,
   interleaved in rounds in the same process (target ratio >= 0.95).
2. achieved GFLOP/s of that step (FLOPs counted with `FlopCounterMode`) as a share of this
   machine's float32 matmul rate (a big `torch.mm`) measured in the same run.
3. `nas_attn.training.train` on the real nuclei tiles (rows 0-2 train, row 3 validation) with the
   real loaders: validation Dice (target >= 0.92 in about two minutes of CPU), the share of
   training-step time spent waiting for data (target < 5 %), and the loop's images/s against
   the bare step's.
Numbers on a shared machine are noisy: ratios are medians of interleaved rounds, absolute rates
the best round (the least disturbed by other load).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_attn.architecture.description import UNetArch  # noqa: E402
from nas_attn.training import SegLoss, TrainConfig, train  # noqa: E402
from nas_attn.architecture.builder import build_unet  # noqa: E402

NUCLEI = Path("/work/shared/data/dsb2018-nuclei")


# ----- the hand-written reference ---------------------------------------------------------------
def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MinimalUNet(nn.Module):
    """The textbook UNet: no attention hooks, no size checks, sizes must divide by 2**depth."""

    def __init__(self, widths=(16, 32, 64, 128, 256), cin: int = 1, cout: int = 1):
        super().__init__()
        self.enc = nn.ModuleList(block(cin if i == 0 else widths[i - 1], w)
                                 for i, w in enumerate(widths))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in range(len(widths) - 1))
        self.dec = nn.ModuleList(block(2 * widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x):
        skips = []
        for i, b in enumerate(self.enc):
            x = b(x if i == 0 else self.pool(x))
            skips.append(x)
        y = skips.pop()
        for i in reversed(range(len(self.dec))):
            y = self.dec[i](torch.cat([skips[i], self.ups[i](y)], 1))
        return self.head(y)


# ----- measurements -----------------------------------------------------------------------------
def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    loss_fn = SegLoss(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def throughput(batch: int, size: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    arch = UNetArch(depth=4, widths=(16, 32, 64, 128, 256))
    models = {"build_unet": build_unet(arch), "minimal": MinimalUNet(arch.widths)}
    x = torch.rand(batch, 1, size, size)
    y = (torch.rand(batch, size, size) > 0.8).long()
    fns = {k: make_step(m, x, y) for k, m in models.items()}
    for f in fns.values():  # warm-up
        time_steps(f, 2)
    times = {k: [] for k in fns}
    ratios = []
    for r in range(rounds):  # alternate the order: load from other processes drifts
        for k in (("build_unet", "minimal") if r % 2 == 0 else ("minimal", "build_unet")):
            times[k].append(time_steps(fns[k], steps))
        ratios.append(times["minimal"][-1] / times["build_unet"][-1])
    with FlopCounterMode(display=False) as fc:
        fns["build_unet"]()
    flops = fc.get_total_flops()
    step_s = min(times["build_unet"])  # best of rounds: the least disturbed by other load
    return {
        "ips_build_unet": batch / step_s,
        "ips_minimal": batch / min(times["minimal"]),
        "ratio": statistics.median(ratios),
        "ratio_min_max": (min(ratios), max(ratios)),
        "gflop_per_step": flops / 1e9,
        "gflops": flops / step_s / 1e9,
    }


def loop_overhead(rounds: int, batch: int) -> dict:
    """images/s of `train()` (second epoch of 8 steps, real loaders, nuclei tiles; training
    steps and data wait, no evaluation) against the bare step on the same data size,
    interleaved in rounds."""
    from nas_attn.data import DataConfig, load_data

    dcfg = DataConfig(source=str(NUCLEI), val_pattern="tile_r3*")
    tr, va = load_data(dcfg)
    arch = UNetArch(depth=4, widths=(16, 32, 64, 128, 256))
    cfg = TrainConfig(device="cpu", epochs=2, warmup_epochs=0.5, batch_size=batch,
                      samples_per_epoch=8 * batch, val_every=2)
    bare = make_step(build_unet(arch), torch.rand(batch, 1, 128, 128),
                     (torch.rand(batch, 128, 128) > 0.8).long())
    time_steps(bare, 2)
    ratios, loop_ips, bare_ips = [], [], []
    for _ in range(rounds):
        bare_ips.append(batch / time_steps(bare, 8))
        # the second epoch: the first one pays for allocator and oneDNN warm-up
        loop_ips.append(train(arch, tr, va, dcfg, cfg).history[-1]["images_per_s"])
        ratios.append(loop_ips[-1] / bare_ips[-1])
    return {"ratio": statistics.median(ratios), "loop": max(loop_ips), "bare": max(bare_ips),
            "range": (min(ratios), max(ratios))}


def quality(epochs: int | None) -> dict:
    """The default TrainConfig (only the device pinned, epochs optionally changed)."""
    from nas_attn.data import DataConfig, load_data

    dcfg = DataConfig(source=str(NUCLEI), val_pattern="tile_r3*")
    tr, va = load_data(dcfg)
    cfg = TrainConfig(device="cpu", **({"epochs": epochs} if epochs else {}))
    arch = UNetArch(depth=4, widths=(16, 32, 64, 128, 256), in_channels=tr.in_channels,
                    classes=tr.classes)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = train(arch, tr, va, dcfg, cfg)
    return {
        "train": len(tr), "val": len(va), "shape": tr.images[0].shape, "cfg": cfg,
        "patches": cfg.resolved_samples_per_epoch(len(tr)),
        "dice": res.best["dice"], "iou": res.best["iou"], "best_epoch": res.best["epoch"],
        "epochs": len(res.history), "steps": res.steps,
        "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
        "wait_share": res.data_wait_s / max(1e-9, res.train_s), "ips": res.images_per_s,
        "curve": [(r["epoch"], round(r["dice"], 3)) for r in res.history if "dice" in r],
        "first_092": next((r["epoch"] for r in res.history if r.get("dice", 0) >= 0.92), None),
        "images": sum(r["images_per_s"] * r["epoch_s"] for r in res.history),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--quality-epochs", type=int, default=None,
                    help="epochs for the quality run (default: TrainConfig's)")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    a = ap.parse_args()
    head = f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu"
    print(head)

    peak = matmul_gflops()
    tp = throughput(a.batch, a.size, a.rounds, a.steps)
    tables = [print_step(a, tp, peak)]
    results = {"matmul_peak_gflops": peak, "step": tp}
    if NUCLEI.is_dir():
        lo = loop_overhead(5, a.batch)
        tables.append(print_loop(lo))
        results["loop"] = lo
        if not a.skip_quality:
            q = quality(a.quality_epochs)
            tables.append(print_quality(q, max(tp["ips_build_unet"], lo["bare"])))
            results["quality"] = {**{k: v for k, v in q.items() if k != "cfg"},
                                  "train_config": q["cfg"].model_dump(mode="json")}
    else:
        tables[0]["notes"].append(f"[loop], [quality] skipped: {NUCLEI} not found")
        print(tables[0]["notes"][-1])
    if a.out:
        import results_file

        tables[0]["notes"].insert(0, head)
        path = results_file.write(a.out, "train_throughput", vars(a), results, tables,
                                  device=f"cpu, {torch.get_num_threads()} torch threads")
        print(f"written: {path}")


def _measures(title: str, rows: list[tuple[str, str, str]], notes: list[str]) -> dict:
    from results_file import table

    return table(title, ["measure", "value", "target"], [list(r) for r in rows], notes)


def print_step(a, tp: dict, peak: float) -> dict:
    """[step] and [flops], printed; the same figures as a table."""
    head = f"[step] batch {a.batch} x 1 x {a.size}^2, depth 4, widths 16..256, Dice+CE, AdamW"
    lo, hi = tp["ratio_min_max"]
    rows = [("build_unet UNet images/s (best round)", f"{tp['ips_build_unet']:.2f}", ""),
            ("minimal UNet images/s (best round)", f"{tp['ips_minimal']:.2f}", ""),
            (f"ratio build_unet/minimal (median of {a.rounds} interleaved rounds)",
             f"{tp['ratio']:.3f}  [range {lo:.3f}-{hi:.3f}]", ">= 0.95"),
            ("GFLOP per step (fwd+bwd)", f"{tp['gflop_per_step']:.2f}", ""),
            ("GFLOP/s", f"{tp['gflops']:.1f}", ""),
            ("float32 matmul peak GFLOP/s", f"{peak:.1f}", ""),
            ("share of the matmul peak", f"{tp['gflops'] / peak:.3f}", "")]
    v = [r[1] for r in rows]
    print(head)
    print(f"  build_unet UNet : {v[0]:>8s} images/s (best round)")
    print(f"  minimal UNet    : {v[1]:>8s} images/s (best round)")
    print(f"  {rows[2][0]}: {v[2]}  target >= 0.95")
    print(f"[flops] {v[3]} GFLOP per step (fwd+bwd) -> {v[4]} GFLOP/s; float32 matmul peak "
          f"{v[5]} GFLOP/s; share {v[6]}")
    return _measures("Training step and FLOP efficiency", rows, [head])


def print_loop(lo: dict) -> dict:
    """[loop], printed; the same figures as a table."""
    rows = [("train() with real loaders images/s (best round)", f"{lo['loop']:.2f}", ""),
            ("bare step images/s (best round)", f"{lo['bare']:.2f}", ""),
            ("ratio (median of 5 interleaved rounds)", f"{lo['ratio']:.3f}", ""),
            ("range", f"{lo['range'][0]:.3f}-{lo['range'][1]:.3f}", "")]
    v = [r[1] for r in rows]
    print(f"[loop] train() with real loaders {v[0]} images/s vs bare step {v[1]} (best rounds): "
          f"ratio {v[2]} (median of 5 interleaved rounds, range {v[3]})")
    return _measures("The training loop against the bare step", rows, [])


def print_quality(q: dict, bare: float) -> dict:
    """[quality], printed; the same figures as a table (`bare`: the best bare-step rate)."""
    c = q["cfg"]
    head = (f"[quality] dsb2018-nuclei: {q['train']} train / {q['val']} val tiles {q['shape']}, "
            f"plain UNet width 16, default TrainConfig: {q['steps']} steps of batch "
            f"{c.batch_size} ({q['epochs']} epochs x {q['patches']} patches), {c.optimizer} lr "
            f"{c.lr:g} {c.schedule}, ema {c.ema}")
    rows = [("best val Dice (IoU) at epoch",
             f"{q['dice']:.4f} (IoU {q['iou']:.4f}) at epoch {q['best_epoch']}", ">= 0.92"),
            ("first epoch with Dice >= 0.92", f"{q['first_092']} of {q['epochs']}", ""),
            ("wall s, process CPU s", f"{q['wall_s']:.1f} s, {q['cpu_s']:.1f} s "
             f"({q['cpu_s'] / max(1e-9, q['wall_s']):.2f} cores busy)", ""),
            ("its training images at the best bare-step rate",
             f"{q['images']:.0f} at {bare:.1f} images/s: {q['images'] / bare:.0f} s", ""),
            ("data wait share of step time", f"{q['wait_share']:.4f}", "< 0.05"),
            ("train() images/s in this run", f"{q['ips']:.2f}", "")]
    print(head)
    print(f"  best val Dice {q['dice']:.4f} (IoU {q['iou']:.4f}) at epoch {q['best_epoch']}  "
          f"target >= 0.92")
    print(f"  first epoch with Dice >= 0.92: {rows[1][1]}")
    print(f"  wall {q['wall_s']:.1f} s, process CPU {q['cpu_s']:.1f} s "
          f"({q['cpu_s'] / max(1e-9, q['wall_s']):.2f} cores busy); at the best bare-step rate "
          f"measured above ({bare:.1f} images/s) its {q['images']:.0f} training images take "
          f"{q['images'] / bare:.0f} s")
    print(f"  data wait share of step time: {rows[4][1]}  target < 0.05")
    print(f"  train() images/s in this run {rows[5][1]} (the machine is shared: compare [loop])")
    print(f"  Dice curve: {q['curve']}")
    return _measures("Quality on the nuclei tiles", rows, [head, f"Dice curve: {q['curve']}"])


if __name__ == "__main__":
    main()
