"""Training-step cost of every attention module placed at every legal site, against a plain UNet.

Usage: python benchmarks/attention_cost.py [--steps 7] [--warmup 2] [--size 128] [--batch 4]
       [--modules se,cbam,...] [--set max_tokens=1024 ...] [--threads N] [--clock wall|cpu]
       [--out results.json]

Setup: 2D UNet of depth 4, widths 16-32-64-128-256, one input channel, binary output (one logit),
batch 4 of 128x128 random images; BCE-with-logits loss, AdamW. A training step is forward +
backward + optimizer step. Each configuration is measured in fresh subprocesses, with torch's
default thread count for the machine unless `--threads` is given.

- time: one subprocess builds the plain UNet and the configuration and alternates their training
  steps (plain, config, plain, config, ...). The ratio is the median over the timed steps of
  config step / neighbouring plain step, so load from other jobs on the machine, which drifts
  over seconds, hits both sides of each ratio alike. Both wall-clock and process CPU time are
  recorded; targets are checked on `--clock` (default wall). On a machine shared with other
  jobs, `--threads 1 --clock cpu` measures the work done and is the steadier of the two.
- memory: a second subprocess per configuration, started with MALLOC_MMAP_THRESHOLD_=65536 so
  that glibc serves every tensor of 64 KiB or more by mmap and gives it back on free; resident
  memory then follows the bytes alive, and the peak resident set size during two training steps
  (`ru_maxrss`) minus the RSS right after model, optimizer state and batch were built is the peak
  memory of a training step (activations kept for backward, gradients, temporaries). Without
  that setting the RSS high-water mark mostly measures allocator fragmentation (+-50 MB here);
  tracemalloc cannot see torch tensors. `saved MB` is, exactly, the bytes of distinct storages
  autograd keeps for backward in one forward pass (torch.autograd.graph.saved_tensors_hooks),
  the deterministic core of the peak.

Placement: a single-input module goes at every encoder site, the bottleneck, every skip (ignoring
the guide) and every decoder site (13 sites); a paired module (gate, cross) at every skip (4).
Targets (ratios to the plain UNet): channel, spatial, gate <= 1.3x time; dual, cross, self
<= 2x time and <= 1.5x memory. timm modules have no target.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {  # family: (max time ratio, max memory ratio or None)
    "channel": (1.3, None), "spatial": (1.3, None), "gate": (1.3, None),
    "dual": (2.0, 1.5), "cross": (2.0, 1.5), "self": (2.0, 1.5),
}
FAMILY_ORDER = ("channel", "spatial", "gate", "dual", "cross", "self", "timm")
DEPTH = 4
WIDTHS = (16, 32, 64, 128, 256)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_arch(name: str | None, kind: str | None, options: dict | None = None):
    from nas_attn.architecture.description import AttnSpec, UNetArch

    spec, none = AttnSpec.make(name, **(options or {})) if name else AttnSpec(), AttnSpec()
    single = name is not None and kind == "single"
    return UNetArch(
        spatial_dims=2, in_channels=1, classes=2, depth=DEPTH, widths=WIDTHS,
        encoder=tuple(spec if single else none for _ in range(DEPTH)),
        bottleneck=spec if single else none,
        skip=tuple(spec if name else none for _ in range(DEPTH)),
        decoder=tuple(spec if single else none for _ in range(DEPTH)),
    )


class _Trainer:
    """One model, its AdamW state (allocated up front) and a fixed batch."""

    def __init__(self, name, kind, size, batch, options=None):
        import torch

        from nas_attn.architecture.builder import build_unet

        torch.manual_seed(0)
        self.model = build_unet(build_arch(name, kind, options)).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(batch, 1, size, size)
        self.y = (torch.rand(batch, 1, size, size) > 0.5).float()
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> tuple[float, float]:
        import torch

        t0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        if not torch.isfinite(loss):
            raise RuntimeError("loss is not finite")
        return time.perf_counter() - t0, time.process_time() - c0


def worker(name, kind, options, mode: str, args) -> dict:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if mode == "memory":
        trainer = _Trainer(name, kind, args.size, args.batch, options)
        saved: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trainer.model(trainer.x)
        baseline = _rss_bytes()
        for _ in range(2):
            trainer.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {"params": trainer.params, "peak_mb": (peak - baseline) / 2**20,
                "saved_mb": sum(saved.values()) / 2**20}
    plain = _Trainer(None, None, args.size, args.batch)
    config = _Trainer(name, kind, args.size, args.batch, options)
    rows = []
    for i in range(args.warmup + args.steps):
        p, c = plain.step(), config.step()
        if i >= args.warmup:
            rows.append((p, c))
    wall = [c[0] / p[0] for p, c in rows]
    cpu = [c[1] / p[1] for p, c in rows]
    return {
        "threads": torch.get_num_threads(),
        "wall_s": statistics.median(c[0] for _, c in rows),
        "cpu_s": statistics.median(c[1] for _, c in rows),
        "plain_wall_s": statistics.median(p[0] for p, _ in rows),
        "plain_cpu_s": statistics.median(p[1] for p, _ in rows),
        "wall_x": statistics.median(wall), "cpu_x": statistics.median(cpu),
    }


def run_config(name, kind, args, options=None) -> dict:
    """Paired timing in one fresh subprocess, memory in another; the merged results."""
    result = {}
    for mode in (("memory",) if name is None else ("time", "memory")):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
               json.dumps([name, kind, options or {}, mode]), "--size", str(args.size), "--batch",
               str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if mode == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"config {name!r} ({mode}) failed:\n{out.stderr[-3000:]}")
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--modules", default="", help="comma-separated names (default: all 2D ones)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time the targets are checked on")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="option for every module that accepts it, e.g. max_tokens=1024")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        name, kind, options, mode = json.loads(args.worker)
        print(json.dumps(worker(name, kind, options, mode, args)))
        return

    sys.path.insert(0, str(ROOT))
    from nas_attn.architecture.registry import all_info

    infos = [i for i in all_info() if 2 in i.dims]
    if args.modules:
        wanted = args.modules.split(",")
        unknown = set(wanted) - {i.name for i in infos}
        if unknown:
            raise SystemExit(f"unknown or 3D-only modules: {sorted(unknown)}")
        infos = [i for i in infos if i.name in wanted]
    infos.sort(key=lambda i: (FAMILY_ORDER.index(i.family), i.name))
    overrides = _overrides(args.set)

    t_start = time.time()
    setup = (f"depth {DEPTH}, widths {'-'.join(map(str, WIDTHS))}, input {args.batch}x1x"
             f"{args.size}x{args.size}, {args.warmup} warm-up + {args.steps} timed step pairs; "
             f"load average {os.getloadavg()[0]:.1f}"
             + (f"; options {overrides} where accepted" if overrides else ""))
    print(setup, flush=True)
    plain = run_config(None, None, args)
    rows = []
    for info in infos:
        opts = {k: v for k, v in overrides.items() if k in info.options()}
        r = run_config(info.name, info.kind, args, opts)
        rows.append((info, r))
        print(f"  {info.name}: {r['wall_x']:.2f}x wall, {r['cpu_x']:.2f}x cpu, "
              f"{r['peak_mb']:.0f} MB peak, {r['saved_mb']:.0f} MB saved", flush=True)
    tables, summary = report(args, plain, rows, t_start, setup)
    if args.out:
        import results_file

        results = {**summary, "plain": plain, "options": overrides,
                   "configs": {i.name: {"family": i.family, "kind": i.kind, **r}
                               for i, r in rows}}
        path = results_file.write(args.out, "attention_cost", vars(args), results, tables,
                                  device="cpu", argv=argv)
        print(f"written: {path}")


def _overrides(items: list[str]) -> dict:
    """`--set OPTION=VALUE` items: a JSON value, or the text as it is."""
    overrides = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def report(args, plain: dict, rows: list, t_start: float, setup: str) -> tuple[list, dict]:
    """Print the table of ratios to the plain UNet; the same table (and the lines around it) for
    the results file, and the medians and verdict it shows."""
    from results_file import table

    key = "cpu" if args.clock == "cpu" else "wall"
    p_wall = statistics.median(r["plain_wall_s"] for _, r in rows) if rows else float("nan")
    p_cpu = statistics.median(r["plain_cpu_s"] for _, r in rows) if rows else float("nan")
    threads = rows[0][1]["threads"] if rows else "?"

    head = (f"torch threads {threads}; plain UNet: {p_wall:.3f} s/step wall, {p_cpu:.3f} s cpu "
            f"(medians over all paired runs), {plain['peak_mb']:.0f} MB peak training memory, "
            f"{plain['saved_mb']:.0f} MB saved for backward, {plain['params']:,} parameters. "
            f"Targets checked on {args.clock} time and peak memory. Load average now "
            f"{os.getloadavg()[0]:.1f}.")
    print(f"\n{head}\n")
    columns = ["module", "family", "sites", "params", "wall s", "wall ×", "cpu s", "cpu ×",
               "peak MB", "memory ×", "saved MB", "saved ×", "target", "met"]
    cells = [["plain", "-", "0", f"{plain['params']:,}", f"{p_wall:.3f}", "1.00", f"{p_cpu:.3f}",
              "1.00", f"{plain['peak_mb']:.0f}", "1.00", f"{plain['saved_mb']:.0f}", "1.00", "-",
              "-"]]
    all_met = True
    for info, r in rows:
        tr, mr = r[f"{key}_x"], r["peak_mb"] / plain["peak_mb"]
        target = TARGETS.get(info.family)
        if target is None:
            tgt, met = "-", "-"
        else:
            ok = tr <= target[0] and (target[1] is None or mr <= target[1])
            all_met &= ok
            tgt = f"≤{target[0]}× t" + (f", ≤{target[1]}× m" if target[1] else "")
            met = "yes" if ok else "NO"
        sites = 4 if info.kind == "paired" else 2 * DEPTH + 1 + DEPTH
        cells.append([info.name, info.family, str(sites), f"{r['params']:,}", f"{r['wall_s']:.3f}",
                      f"{r['wall_x']:.2f}", f"{r['cpu_s']:.3f}", f"{r['cpu_x']:.2f}",
                      f"{r['peak_mb']:.0f}", f"{mr:.2f}", f"{r['saved_mb']:.0f}",
                      f"{r['saved_mb'] / plain['saved_mb']:.2f}", tgt, met])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for c in cells:
        print("| " + " | ".join(c) + " |")
    end = (f"all targets met: {'yes' if all_met else 'NO'}  (benchmark took "
           f"{time.time() - t_start:.0f} s)")
    print(f"\n{end}")
    summary = {"plain_wall_s": p_wall, "plain_cpu_s": p_cpu, "threads": threads,
               "clock": args.clock, "all_met": all_met, "seconds": time.time() - t_start}
    return [table("Training-step cost against the plain UNet", columns, cells,
                  [setup, head, end])], summary


if __name__ == "__main__":
    main()
