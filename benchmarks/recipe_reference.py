"""Does nas-attn's default training recipe reach a minimal hand-written one? Test Dice, as a ratio.

    python benchmarks/recipe_reference.py [--data {inia19,nuclei,both}] [--seeds 0 1 2 3]
                                          [--steps N] [--batch B] [--only {both,nas,ref}]
                                          [--jobs 2] [--out results.json]
                                          [--set train.lr=1e-3 --set data.augment.flips=false]

Per dataset and seed, on one CPU thread each:

- reference: a plain-PyTorch script (its own UNet of widths 16..256, depth 4; CE + batch soft
  Dice; AdamW; OneCycleLR; `steps` steps of `batch` whole training images; no augmentation;
  last weights). It imports nothing from nas_attn.
- nas-attn: the same plain UNet (`UNetArch`, no attention) through `nas_attn.training.train` with
  the default `TrainConfig` / `DataConfig`; only the number of epochs is set so that it sees as
  many training samples as the reference (steps x batch). It may keep its best epoch on val.

Both are scored on the test split, which neither ever sees before, by `pooled_dice` below (its
own numpy code, not the library's metric): per-class Dice pooled over the whole split (sums of
intersections and sizes per class over all images), mean over the foreground classes present
in the reference or the prediction; an all-background prediction scores 0.

Defaults: seeds 0-3, `--jobs` runs at a time (one thread each; differences paired by seed);
400 reference steps of 4 on inia19 (at 250 the reference swung 0.219 / 0.046 with the seed;
at 400 it gives 0.38-0.56), 150 on nuclei.

Data: inia19-macaque (train.txt / val.txt; test = ../inia19-macaque-test) and the nuclei tiles
(rows 0-1 train, row 2 val, row 3 test). Target: ratio nas-attn / reference >= 1.0 on both.
`--set KEY=VALUE` overrides a TrainConfig (`train.`) or DataConfig (`data.`) field of the
nas-attn side, for experiments; the printed summary then says so.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data of the repo
WIDTHS = (16, 32, 64, 128, 256)
DEFAULT_STEPS = {"inia19": 400, "nuclei": 150}


# ----- independent scoring ----------------------------------------------------------------------
def pooled_dice(preds: list[np.ndarray], gts: list[np.ndarray], classes: int) -> float:
    """Per-class Dice over the whole split (pooled sums), mean over foreground classes present in
    the reference or the prediction. Nothing predicted and nothing there: no class counts."""
    conf = np.zeros((classes, classes), np.int64)
    for p, g in zip(preds, gts):
        conf += np.bincount(g.astype(np.int64).ravel() * classes + p.astype(np.int64).ravel(),
                            minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(conf)[1:].astype(float)
    size = conf.sum(0)[1:] + conf.sum(1)[1:]
    present = size > 0
    return float(np.mean(2 * inter[present] / size[present])) if present.any() else float("nan")


# ----- data as plain arrays (the reference's view) ----------------------------------------------
def read_pngs(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([np.asarray(Image.open(folder / "images" / f"{n}.png"), np.float32) / 255 for n in names])
    y = np.stack([np.asarray(Image.open(folder / "masks" / f"{n}.png")) for n in names]).astype(np.int64)
    y[y == 255] = 1  # binary masks are 0/255
    return x[:, None], y


def splits(which: str) -> dict:
    if which == "inia19":
        root = DATA / "inia19-macaque"
        tr = (root / "train.txt").read_text().split()
        va = (root / "val.txt").read_text().split()
        test = DATA / "inia19-macaque-test"
        te = sorted(p.stem for p in (test / "images").glob("*.png"))
        return {"name": "inia19-macaque", "root": root, "train": tr, "val": va,
                "test_root": test, "test": te}
    root = DATA / "dsb2018-nuclei"
    names = sorted(p.stem for p in (root / "images").glob("*.png"))
    rows = {r: [n for n in names if n.startswith(f"tile_r{r}")] for r in range(4)}
    return {"name": "dsb2018-nuclei", "root": root, "train": rows[0] + rows[1], "val": rows[2],
            "test_root": root, "test": rows[3], "val_pattern": "tile_r2*",
            "test_pattern": "tile_r3*"}


# ----- the hand-written reference (plain PyTorch only) ------------------------------------------
def ref_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class RefUNet(nn.Module):
    def __init__(self, classes: int, widths=WIDTHS):
        super().__init__()
        self.enc = nn.ModuleList(ref_block(1 if i == 0 else widths[i - 1], w) for i, w in enumerate(widths))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in range(len(widths) - 1))
        self.dec = nn.ModuleList(ref_block(2 * widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], classes, 1)
        self.k = 2 ** (len(widths) - 1)

    def forward(self, x):
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % self.k, 0, -h % self.k))  # sizes must divide by 2**depth
        skips = []
        for i, b in enumerate(self.enc):
            x = b(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        y = skips.pop()
        for i in reversed(range(len(self.dec))):
            y = self.dec[i](torch.cat([skips[i], self.ups[i](y)], 1))
        return self.head(y)[:, :, :h, :w]


def ref_loss(logits, y, classes: int, smooth: float = 1.0):
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(y, classes).movedim(-1, 1)[:, 1:].float()
    inter, size = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
    return F.cross_entropy(logits, y) + 1 - ((2 * inter + smooth) / (size + smooth)).mean()


def ref_train(x: np.ndarray, y: np.ndarray, classes: int, steps: int, batch: int, seed: int):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = RefUNet(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), batch, replace=False))
        loss = ref_loss(model(xt[idx]), yt[idx], classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def ref_predict(model, x: np.ndarray) -> list[np.ndarray]:
    return [model(torch.from_numpy(x[i:i + 1])).argmax(1)[0].numpy() for i in range(len(x))]


# ----- nas-attn ---------------------------------------------------------------------------------
def _parse_sets(items: list[str]) -> tuple[dict, dict]:
    import yaml

    train_kw, data_kw = {}, {}
    for item in items:
        key, _, value = item.partition("=")
        scope, _, field = key.partition(".")
        if scope not in ("train", "data") or not field or not _:
            raise SystemExit(f"--set {item!r}: expected train.FIELD=VALUE or data.FIELD=VALUE")
        target = train_kw if scope == "train" else data_kw
        parts = field.split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = yaml.safe_load(value)
    return train_kw, data_kw


def nas_run(sp: dict, budget: int, seed: int, train_kw: dict, data_kw: dict):
    from nas_attn.architecture.description import UNetArch
    from nas_attn.data import DataConfig, load_data, load_test
    from nas_attn.training import TrainConfig, train

    split = ({"test_source": str(sp["test_root"])} if sp["test_root"] != sp["root"] else
             {"val_pattern": sp["val_pattern"], "test_pattern": sp["test_pattern"]})
    data_cfg = DataConfig(**{"source": str(sp["root"]), **split, **data_kw})
    tr, va = load_data(data_cfg)
    te = load_test(data_cfg)
    assert tr.names == sp["train"] and va.names == sp["val"] and te.names == sp["test"]
    base = TrainConfig(**train_kw)
    per_epoch = (base.resolved_samples_per_epoch(len(tr)) // base.batch_size) * base.batch_size
    epochs = max(1, round(budget / per_epoch))
    cfg = TrainConfig(**{**train_kw, "epochs": epochs, "seed": seed, "device": "cpu"})
    arch = UNetArch(in_channels=1, classes=tr.classes, depth=len(WIDTHS) - 1, widths=WIDTHS)
    t = time.perf_counter()
    res = train(arch, tr, va, data_cfg, cfg, preview=False)
    seconds = time.perf_counter() - t
    preds = []
    with torch.no_grad():
        for img in te.images:  # normalised as in training (the training images' settings)
            logits = res.model(torch.from_numpy(img[None]))
            preds.append((logits[0, 0] > 0).long().numpy() if logits.shape[1] == 1
                         else logits.argmax(1)[0].numpy())
    return preds, te.masks, tr.classes, seconds, epochs * per_epoch, res


def _task(job: tuple) -> dict:
    """One (dataset, seed, side) run in a worker process with one thread."""
    which, seed, side, steps, batch, sets = job
    torch.set_num_threads(1)
    sp = splits(which)
    xtr, ytr = read_pngs(sp["root"], sp["train"])
    xte, yte = read_pngs(sp["test_root"], sp["test"])
    classes = int(max(ytr.max(), yte.max())) + 1
    t = time.perf_counter()
    if side == "ref":
        model = ref_train(xtr, ytr, classes, steps, batch, seed)
        dice = pooled_dice(ref_predict(model, xte), list(yte), classes)
        return {"which": which, "seed": seed, "side": side, "dice": dice,
                "s": time.perf_counter() - t,
                "line": f"seed {seed} reference: test Dice {dice:.3f} "
                        f"({time.perf_counter() - t:.0f} s, {steps} steps of {batch})"}
    train_kw, data_kw = _parse_sets(sets)
    preds, gts, ncls, sec, seen, res = nas_run(sp, steps * batch, seed, train_kw, data_kw)
    dice = pooled_dice(preds, gts, max(ncls, classes))
    val = res.best.get("dice", float("nan"))
    return {"which": which, "seed": seed, "side": side, "dice": dice, "s": sec,
            "line": f"seed {seed} nas-attn : test Dice {dice:.3f} ({sec:.0f} s, {res.steps} "
                    f"steps, {seen} samples, best epoch {res.best.get('epoch')} with library "
                    f"val Dice {val:.3f})"}


def _ms(v: list[float]) -> str:
    if not v:
        return "-"
    return f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("inia19", "nuclei", "both"), default="both")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--steps", type=int, default=None,
                    help=f"reference steps (default {DEFAULT_STEPS['inia19']} on inia19, "
                         f"{DEFAULT_STEPS['nuclei']} on nuclei)")
    ap.add_argument("--batch", type=int, default=4, help="reference batch size")
    ap.add_argument("--only", choices=("both", "nas", "ref"), default="both")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs in parallel, one process and one thread each (default: 2 or the "
                         "number of cores if fewer)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a nas-attn setting: train.FIELD=V or data.FIELD=V (data.augment.X=V)")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args()
    _parse_sets(args.set)  # refuse a bad --set before any training
    which_all = ("inia19", "nuclei") if args.data == "both" else (args.data,)
    sides = ("ref", "nas") if args.only == "both" else (args.only,)
    jobs = [(w, seed, side, args.steps or DEFAULT_STEPS[w], args.batch, args.set)
            for w in which_all for seed in args.seeds for side in sides]
    headers = []
    for w in which_all:
        sp = splits(w)
        classes = 1 + max(int(read_pngs(sp["root"], sp["train"])[1].max()),
                          int(read_pngs(sp["test_root"], sp["test"])[1].max()))
        headers.append(f"{sp['name']}: {len(sp['train'])} train / {len(sp['val'])} val / "
                       f"{len(sp['test'])} test, {classes} classes; "
                       f"{(args.steps or DEFAULT_STEPS[w]) * args.batch} training samples per "
                       "run" + (f"; nas-attn overrides: {' '.join(args.set)}" if args.set
                                else ""))
        print(f"== {headers[-1]}", flush=True)
    results = []
    t0 = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for r in pool.imap_unordered(_task, jobs):
                print(f"  [{r['which']}] {r['line']}", flush=True)
                results.append(r)
    else:
        for job in jobs:
            r = _task(job)
            print(f"  [{r['which']}] {r['line']}", flush=True)
            results.append(r)
    head = (f"summary ({len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}: "
            f"{' '.join(map(str, args.seeds))}; {time.perf_counter() - t0:.0f} s wall with "
            f"{args.jobs} job{'s' if args.jobs > 1 else ''})"
            + (f", nas-attn overrides: {' '.join(args.set)}" if args.set else ""))
    print(f"\n{head}")
    rows = [summary(w, results, args.seeds) for w in which_all]
    if args.out:
        write_results(args, results, rows, headers + [head])


def write_results(args, results: list[dict], rows: list[list[str]], notes: list[str]) -> None:
    """The summary and every run's line, as printed, beside each run's numbers."""
    import results_file

    tables = [results_file.table("Test Dice, nas-attn against the reference", SUMMARY, rows,
                                 notes),
              results_file.table("Each run", ["data set", "run"],
                                 [[r["which"], r["line"]] for r in results])]
    path = results_file.write(args.out, "recipe_reference", vars(args), {"runs": results},
                              tables, device="cpu, one thread per run")
    print(f"written: {path}")


SUMMARY = ["data set", "test Dice nas-attn", "reference", "ratio of means",
           "paired by seed nas-attn − reference", "nas-attn ahead", "time per run"]


def summary(w: str, results: list[dict], seeds: list[int]) -> list[str]:
    """Print one data set's summary line; its figures as cells (SUMMARY's columns)."""
    by = {side: {r["seed"]: r for r in results if r["which"] == w and r["side"] == side}
          for side in ("nas", "ref")}
    nas = [by["nas"][s]["dice"] for s in seeds if s in by["nas"]]
    ref = [by["ref"][s]["dice"] for s in seeds if s in by["ref"]]
    cells = [splits(w)["name"], _ms(nas), _ms(ref), "-", "-", "-"]
    line = f"{cells[0]}: test Dice nas-attn {cells[1]} vs reference {cells[2]}"
    if nas and ref:
        diffs = [by["nas"][s]["dice"] - by["ref"][s]["dice"] for s in seeds]
        cells[3:6] = [f"{statistics.mean(nas) / statistics.mean(ref):.2f}",
                      f"{statistics.mean(diffs):+.3f}"
                      + (f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""),
                      f"{sum(d > 0 for d in diffs)} of {len(diffs)} seeds"]
        line += (f", ratio of means {cells[3]}; paired by seed nas-attn − reference {cells[4]}"
                 f"; nas-attn ahead on {cells[5]}")
    secs = {side: [r["s"] for r in by[side].values()] for side in ("nas", "ref")}
    cells.append(", ".join(
        f"{'nas-attn' if k == 'nas' else 'reference'} {statistics.mean(v):.0f} s"
        for k, v in secs.items() if v))
    line += "; time per run " + cells[6]
    print("  " + line)
    return cells


if __name__ == "__main__":
    main()
