"""Kernel launches per training step, before and after the launch-count work; on CUDA also
images/s, the data-wait share and the share of the card's dense bf16 rate.

    python benchmarks/gpu_step.py [--size 128] [--batch 8] [--width 12] [--fp32]
                                  [--device cpu|cuda] [--train-steps 60] [--out results.json]

Models: the plain UNet (depth 4, widths w..16w) and an attention-heavy candidate of the same
widths (`self` at every encoder level, `dual` at the bottleneck, `cross` on every skip,
`position` at every decoder level). One training step = the loop's step: forward under the
runtime's autocast and memory format (on CPU: bf16 autocast and channels_last unless --fp32, as
CUDA would run), Dice+CE loss, backward, gradient clipping, AdamW.

- before: the token path rebuilds its interpolation matrices on every call
  (`tokens.CACHE_CONSTANTS = False`) and AdamW runs CUDA's default multi-tensor (`foreach`)
  implementation;
- after: cached matrices and the fused AdamW kernel that `Runtime.optimizer_kwargs()` asks for
  on CUDA.

Counting. On CUDA: device-side kernel, memcpy and memset events of torch.profiler. On the CPU
there are no kernels; the count is the outermost `aten::` operator calls (those made by Python
and the autograd engine), without the ones that only make views or allocate (view, reshape,
transpose, expand, empty, ...): on CUDA such a call is one kernel or a few (a convolution may
be two or three, a multi-tensor `_foreach_*` op one per chunk of tensors). The ratio
after/before is the figure to read; the absolute CPU counts approximate the CUDA launches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_attn.architecture.description import AttnSpec, UNetArch  # noqa: E402
from nas_attn.models import tokens  # noqa: E402
from nas_attn.device import Runtime  # noqa: E402
from nas_attn.training import SegLoss, TrainConfig  # noqa: E402
from nas_attn.training.optim import make_optimizer  # noqa: E402
from nas_attn.architecture.builder import build_unet  # noqa: E402

NO_KERNEL = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::t",
    "aten::transpose", "aten::permute", "aten::expand", "aten::expand_as", "aten::squeeze",
    "aten::unsqueeze", "aten::select", "aten::slice", "aten::detach", "aten::detach_",
    "aten::alias", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resize_",
    "aten::split", "aten::split_with_sizes", "aten::narrow", "aten::unbind", "aten::lift_fresh",
    "aten::result_type", "aten::contiguous", "aten::to", "aten::flatten", "aten::unflatten",
    "aten::movedim", "aten::view_as", "aten::chunk", "aten::set_", "aten::_unsafe_view",
    "aten::numpy_T", "aten::matrix_H", "aten::mT", "aten::is_nonzero", "aten::size",
    "aten::stride", "aten::dim", "aten::is_same_size", "aten::broadcast_tensors",
    "aten::resolve_conj", "aten::resolve_neg", "aten::_nnpack_available", "aten::conj",
    "aten::_has_compatible_shallow_copy_type", "aten::is_complex", "aten::is_floating_point",
    # reading a CPU scalar (AdamW's step counters live on the CPU unless fused/capturable)
    "aten::item", "aten::_local_scalar_dense",
}


def archs(width: int) -> dict[str, UNetArch]:
    widths = tuple(width * 2 ** i for i in range(5))
    plain = UNetArch(depth=4, widths=widths)
    heavy = UNetArch(depth=4, widths=widths, encoder=(AttnSpec("self"),) * 4,
                     bottleneck=AttnSpec("dual"), skip=(AttnSpec("cross"),) * 4,
                     decoder=(AttnSpec("position"),) * 4)
    return {"plain UNet": plain, "attention-heavy": heavy}


def _does_work(e) -> bool:
    own = e.name.startswith("aten::") and e.name not in NO_KERNEL
    return own or any(_does_work(c) for c in e.cpu_children)


def _count_cpu(events, counter=None) -> int:
    """Operator calls that do work: the outermost `aten::` ops (what Python and the autograd
    engine call; their CPU-internal sub-ops are implementation details that cuDNN/cuBLAS do in
    one or a few kernels), leaving out those that only make views or allocate."""
    def walk(e) -> int:
        if not e.name.startswith("aten::"):
            return sum(walk(c) for c in e.cpu_children)
        if not _does_work(e):
            return 0
        if counter is not None:
            counter[e.name] += 1
        return 1

    return sum(walk(e) for e in events if e.cpu_parent is None)


def _count_cuda(events) -> int:
    from torch.autograd import DeviceType

    return sum(1 for e in events if e.device_type == DeviceType.CUDA)


class Step:
    """One training step of the loop (forward, loss, backward, clip, optimizer step)."""

    def __init__(self, arch: UNetArch, runtime: Runtime, optimizer_policy: str, batch: int,
                 size: int):
        torch.manual_seed(0)
        self.runtime = runtime
        self.model = runtime.prepare_model(build_unet(arch)).train()
        cfg = TrainConfig(device=str(runtime.device))
        self.clip = cfg.grad_clip
        if optimizer_policy == "fused":
            # what `make_optimizer` builds on CUDA; asked of the CUDA policy so that a CPU run
            # exercises the same (fused) implementation
            policy = runtime if runtime.is_cuda else Runtime(torch.device("cuda"))
            self.opt = make_optimizer(self.model, cfg, policy)
        else:  # CUDA's default before: the multi-tensor implementation
            self.opt = make_optimizer(self.model, cfg)
            for g in self.opt.param_groups:
                g["foreach"] = True
        self.loss = SegLoss(arch.out_channels)
        x = torch.randn(batch, arch.in_channels, size, size)
        y = (torch.rand(batch, size, size) > 0.8).to(torch.uint8)
        self.batch = runtime.to_device({"image": x, "mask": y})

    def __call__(self):
        x, y = self.batch["image"], self.batch["mask"]
        with self.runtime.autocast():
            out = self.model(x)
        loss = self.loss(out, y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss


def launches(step: Step, cache: bool) -> int:
    tokens.CACHE_CONSTANTS = cache
    tokens._CONSTANTS.clear()
    step()  # warm-up: caches filled, lazy state (optimizer moments) created
    step()
    cuda = step.runtime.is_cuda
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    return _count_cuda(events) if cuda else _count_cpu(events)


def dense_bf16_rate(device) -> float:
    """FLOP/s of a large bf16 matmul on this card, measured now (the card's dense rate)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * 8192 ** 3 / best


def cuda_throughput(arch: UNetArch, runtime: Runtime, size: int, batch: int, steps: int,
                    peak: float) -> dict:
    """images/s, data-wait share (the real loop and loaders on built-in data) and the share of
    the dense bf16 rate achieved by the training step's FLOPs (forward + backward counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from nas_attn.api import adapt_arch
    from nas_attn.data import DataConfig, load_data
    from nas_attn.training import train

    step = Step(arch, runtime, "fused", batch, size)
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops() / batch
    dcfg = DataConfig(builtin_n=64, builtin_size=size)
    tr, va = load_data(dcfg)
    arch, _ = adapt_arch(arch, tr)  # its classes (3), as `nas-attn train` adapts them
    cfg = TrainConfig(epochs=2, batch_size=batch, steps_per_epoch=max(1, steps // 2),
                      device=str(runtime.device))
    res = train(arch, tr, va, dcfg, cfg, runtime=runtime, preview=False)
    ips = res.images_per_s
    wait, share = 100 * res.data_wait_s / max(1e-9, res.train_s), 100 * flops * ips / peak
    cells = [f"{ips:.1f}", f"{wait:.1f} %", f"{share:.2f} %", f"{peak / 1e12:.0f}"]
    return {"images_per_s": ips, "data_wait_pct": wait, "bf16_share_pct": share,
            "flops_per_image": flops, "cells": cells,
            "text": f"{ips:8.1f} images/s, data wait {wait:4.1f} %, {share:5.2f} % of the dense "
                    f"bf16 rate ({peak / 1e12:.0f} TFLOP/s measured)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=12)
    ap.add_argument("--fp32", action="store_true", help="CPU: no bf16 autocast / channels_last")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--train-steps", type=int, default=60, help="CUDA: loop steps for images/s")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        runtime = Runtime.create(dev, amp=not args.fp32, channels_last=not args.fp32)
    else:
        runtime = Runtime(dev, amp=not args.fp32, channels_last=not args.fp32,
                          dtype=torch.float32 if args.fp32 else torch.bfloat16)
    head = (f"device {runtime.describe()}, batch {args.batch} x {args.size}^2, width "
            f"{args.width}, torch {torch.__version__}")
    print(head)
    what = "CUDA kernels" if runtime.is_cuda else "aten ops doing work"
    peak = dense_bf16_rate(dev) if runtime.is_cuda else None
    results = {}
    for name, arch in archs(args.width).items():
        before = launches(Step(arch, runtime, "foreach", args.batch, args.size), cache=False)
        after = launches(Step(arch, runtime, "fused", args.batch, args.size), cache=True)
        results[name] = {"before": before, "after": after,
                         "fewer_pct": 100 * (before - after) / before}
        print(f"{name:16s} {what} per step: before {before:5d}, after {after:5d}, "
              f"{results[name]['fewer_pct']:5.1f} % fewer")
        if runtime.is_cuda:
            results[name]["cuda"] = cuda_throughput(arch, runtime, args.size, args.batch,
                                                    args.train_steps, peak)
            print(f"{'':16s} {results[name]['cuda']['text']}")
    tokens.CACHE_CONSTANTS = True
    note = "CUDA figures (images/s, data wait, share of the bf16 rate) need a GPU: not measured."
    if not runtime.is_cuda:
        print(note)
    if args.out:
        import results_file

        tables = report(results, what, [head] + ([] if runtime.is_cuda else [note]))
        for r in results.values():
            r.get("cuda", {}).pop("cells", None)
        path = results_file.write(args.out, "gpu_step", vars(args), results, tables,
                                  device=runtime.describe())
        print(f"written: {path}")


def report(results: dict, what: str, notes: list[str]) -> list[dict]:
    """The printed figures as one table, a row per model."""
    from results_file import table

    cuda = any("cuda" in r for r in results.values())
    columns = ["model", f"{what} per step, before", "after", "fewer"] + (
        ["images/s", "data wait", "share of the dense bf16 rate", "bf16 TFLOP/s measured"]
        if cuda else [])
    rows = [[name, str(r["before"]), str(r["after"]), f"{r['fewer_pct']:.1f} %"]
            + (r["cuda"]["cells"] if cuda else []) for name, r in results.items()]
    return [table("Kernel launches per training step, before and after the launch-count work",
                  columns, rows, notes)]


if __name__ == "__main__":
    main()
