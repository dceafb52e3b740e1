"""Data larger than memory: resident memory against dataset size, the preprocessed cache's build
time, and training throughput from the cache against the in-memory path.

    python benchmarks/data_scale.py [--gb 6] [--cap-gb 2] [--side 96] [--work DIR] [--keep]
                                    [--out results.json]
    python benchmarks/data_scale.py --only-2d     2D tiles: training from the cache against memory
    python benchmarks/data_scale.py --only-loader the loaders alone, cache against memory

1. Generates a 3D images/ + masks/ folder of uncompressed NIfTI volumes (`--side`³, float32
   images, uint8 masks, 3 classes) holding `--gb` GB of decoded arrays, plus a folder with a
   sixth of the cases, and a small one that fits in memory.
2. In child processes (their peak resident memory, VmHWM, read from /proc while they run, and
   the anonymous part, RssAnon, which is what the process itself holds):
   - a short training (`nas_attn.training.train`: 1 epoch of 32 patches of 64³, batch 2, 2
     validation volumes selected by name) on the small, the sixth and the full folder through the
     cache, and on the small and the sixth folder in memory (the full one would not fit the
     cap: the in-memory path holds about 4.7 × the raw arrays);
   - `nas-attn search` with 2 trials of a tiny 3D space on the full folder (cache).
3. Prints peak memory against dataset size for both paths (target: with the cache, independent
   of the dataset's size and at most `--cap-gb`), the cache build time per GB, and images/s of
   the training from the cache against the in-memory path on the small folder (target ≥ 0.9 ×;
   median of `--rounds` interleaved pairs).
The cache is built by the first training on each folder; its time is measured separately first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import table  # noqa: E402 (benchmarks/, the script's folder)


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def watched(cmd: list[str], env: dict | None = None) -> tuple[str, dict[str, int], float]:
    """Run `cmd`, polling its /proc status; (stdout, peaks in bytes, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=ROOT)
    peaks: dict[str, int] = {}
    out_parts: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out_parts.append(p.stdout.read()), daemon=True)
    reader.start()
    while p.poll() is None:
        for k, v in _status(p.pid).items():
            peaks[k] = max(peaks.get(k, 0), v)
        time.sleep(0.05)
    reader.join()
    out = "".join(out_parts)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return out, peaks, time.perf_counter() - t0


def generate(root: Path, n: int, side: int, seed: int = 0) -> float:
    """`n` cases of side³; returns the decoded size in GB (float32 image + uint8 mask)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.ogrid[:side, :side, :side]
    for i in range(n):
        c = rng.integers(side // 4, 3 * side // 4, size=(2, 3))
        r = rng.integers(side // 10, side // 5, size=2)
        mask = np.zeros((side,) * 3, np.uint8)
        for k in range(2):
            inside = (zz - c[k, 0]) ** 2 + (yy - c[k, 1]) ** 2 + (xx - c[k, 2]) ** 2 < r[k] ** 2
            mask[inside] = k + 1
        img = (mask * 40.0 + rng.normal(100, 20, mask.shape)).astype(np.float32)
        name = f"val_{i:05d}" if i < 2 else f"case_{i:05d}"
        aff = np.diag([1.0, 1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(img, aff), str(root / "images" / f"{name}.nii"))
        nib.save(nib.Nifti1Image(mask, aff), str(root / "masks" / f"{name}.nii"))
    return n * side ** 3 * 5 / 1e9


def generate_2d(root: Path, n: int, side: int, seed: int = 0) -> None:
    """`n` PNG images of side² with two classes of discs (8-bit, as microscopy tiles)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.ogrid[:side, :side]
    for i in range(n):
        mask = np.zeros((side, side), np.uint8)
        for k in range(6):
            cy, cx = rng.integers(0, side, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(4, side // 8) ** 2] = 1 + k % 2
        img = np.clip(mask * 60.0 + rng.normal(80, 20, mask.shape), 0, 255).astype(np.uint8)
        name = f"val_{i:05d}" if i < 2 else f"case_{i:05d}"
        Image.fromarray(img).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")


CHILD_TRAIN = """
import json, sys, time
from nas_attn.architecture.description import UNetArch
from nas_attn.data import DataConfig, load_data
from nas_attn.training import TrainConfig, train
src, mode, dims = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
dc = DataConfig(source=src, cache=mode, patch_size=[64 if dims == 3 else 128],
                val_pattern="val_*", num_workers=0)
tr, va = load_data(dc)
load_s = time.perf_counter() - t0
arch = UNetArch(spatial_dims=dims, in_channels=1, classes=3, depth=2, widths=(4, 8, 16))
res = train(arch, tr, va, dc, TrainConfig.make(epochs=1, samples_per_epoch=32 if dims == 3
                                              else 256, batch_size=2 if dims == 3 else 8,
                                              seed=0), preview=False)
print("RESULT " + json.dumps({"load_s": load_s, "images_per_s": res.images_per_s,
                              "n": len(tr) + len(va), "dice": float(res.best["dice"])}))
"""

CHILD_LOADER = """
import json, statistics, sys, time
from nas_attn.data import DataConfig, clear_cache, load_data, make_loaders
src, dims, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
patch, batch = ([64], 2) if dims == 3 else ([128], 8)
loaders = {}
for mode in ("on", "off"):
    clear_cache()
    dc = DataConfig(source=src, cache=mode, patch_size=patch, val_pattern="val_*", num_workers=0)
    tr, va = load_data(dc)
    loaders[mode] = make_loaders(tr, va, dc, batch_size=batch, seed=0, samples_per_epoch=batch * 32)[0]
rates = {"on": [], "off": []}
for r in range(rounds):
    for mode in ("on", "off"):
        t0 = time.perf_counter()
        n = sum(b["image"].shape[0] for b in loaders[mode])
        rates[mode].append(n / (time.perf_counter() - t0))
print("RESULT " + json.dumps(rates))
"""

SPACE = textwrap.dedent("""\
    description: data_scale benchmark, 2 tiny 3D trials
    macro: {depth: [2], base_width: [4]}
    encoder: {choices: [none, se]}
    bottleneck: {choices: [none, se]}
    skip: {choices: [none]}
    decoder: {choices: [none]}
    training: {batch_size: 2}
    budget: {epochs: 1, samples_per_epoch: 8}
    data: {patch_size: [64], val_pattern: "val_*"}
    search: {sampler: random, pruner: none, trials: 2, baselines: false}
    """)


def search_child(work: Path, cache: Path, env: dict) -> tuple[dict[str, int], float]:
    """`nas-attn search` with 2 trials of a tiny 3D space on the full folder, in a fresh runs
    folder (a study left by an earlier run would be resumed, not searched)."""
    shutil.rmtree(work / "runs", ignore_errors=True)
    space = work / "space.yaml"
    space.write_text(SPACE)
    out, peaks, secs = watched(
        [sys.executable, "-m", "nas_attn.cli", "search", "--space", str(space), "--data",
         str(work / "full"), "--trials", "2", "--runs-dir", str(work / "runs"),
         "--cache-dir", str(cache)], env)
    if "2 trial" not in out and "ran 2" not in out:
        print(out[-2000:])
    print(f"search (2 trials, full folder, cache): peak resident "
          f"{peaks['VmHWM'] / 2**20:.0f} MB, {secs:.0f} s", flush=True)
    return peaks, secs


def train_child(src: Path, mode: str, env: dict, dims: int = 3
                ) -> tuple[dict, dict[str, int], float]:
    out, peaks, secs = watched([sys.executable, "-c", CHILD_TRAIN, str(src), mode, str(dims)],
                               env)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[7:]), peaks, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=6.0, help="decoded size of the big folder")
    ap.add_argument("--cap-gb", type=float, default=2.0)
    ap.add_argument("--side", type=int, default=96)
    ap.add_argument("--small-cases", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only-2d", action="store_true",
                    help="only the 2D comparison: images/s through the cache (cache: on) "
                    "against memory (the default for 2D) on 64 PNG tiles of 256²")
    ap.add_argument("--only-search", action="store_true",
                    help="only the 2-trial search on the full folder")
    ap.add_argument("--only-loader", action="store_true",
                    help="only the loaders' patches/s, cache against memory, in one process "
                    "(interleaved rounds), on the small 3D folder and 2D tiles")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' tables)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="nas-attn-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    env = {**os.environ, "NAS_ATTN_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "2"}
    if a.only_search:
        peaks, secs = search_child(work, cache, env)
        results = {"search": {"peaks": peaks, "seconds": secs}}
        tables = [table("Search", ["run", "peak resident MB", "s"],
                        [["search (2 trials, full folder, cache)",
                          f"{peaks['VmHWM'] / 2**20:.0f}", f"{secs:.0f}"]])]
    elif a.only_loader:
        results, tables = only_loader(a, work, env)
    elif a.only_2d:
        results, tables = only_2d(a, work, env)
    else:
        results, tables = full_run(a, work, cache, env)
    if a.out:
        import results_file

        path = results_file.write(a.out, "data_scale", vars(a), results, tables, device="cpu")
        print(f"written: {path}")


def only_loader(a, work: Path, env: dict) -> tuple[dict, list[dict]]:
    """The loaders' patches/s, cache against memory, on the small 3D folder and 2D tiles."""
    results, rows = {}, []
    for dims, folder in ((3, work / "small"), (2, work / "tiles2d")):
        if not (folder / "masks").is_dir():
            (generate(folder, a.small_cases, a.side) if dims == 3 else
             generate_2d(folder, 64, 256))
        out, _, _ = watched([sys.executable, "-c", CHILD_LOADER, str(folder), str(dims),
                             str(a.rounds)], env)
        rates = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
        ratios = [a_ / b_ for a_, b_ in zip(rates["on"], rates["off"])]
        results[f"{dims}D"] = {"patches_per_s": rates, "ratios": ratios}
        c = [f"{dims}D", f"{statistics.median(ratios):.2f} x",
             f"{statistics.median(rates['on']):.0f}", f"{statistics.median(rates['off']):.0f}"]
        rows.append(c)
        print(f"{dims}D loader (patches with augmentation, no model), cache / memory: "
              f"{c[1]} (median of {a.rounds} interleaved rounds; "
              f"cache {c[2]}, memory {c[3]} patches/s)", flush=True)
    return results, [table("The loaders alone (patches with augmentation, no model)",
                           ["loader", "cache / memory", "cache patches/s", "memory patches/s"],
                           rows, [f"medians of {a.rounds} interleaved rounds"])]


def only_2d(a, work: Path, env: dict) -> tuple[dict, list[dict]]:
    """2D tiles: images/s of the training from the cache against memory, in rounds."""
    folder = work / "tiles2d"
    if not (folder / "masks").is_dir():
        generate_2d(folder, 64, 256)
    ratios, runs, rows = [], [], []
    for i in range(a.rounds):
        on, on_peaks, _ = train_child(folder, "on", env, dims=2)
        off, off_peaks, _ = train_child(folder, "off", env, dims=2)
        ratios.append(on["images_per_s"] / off["images_per_s"])
        runs.append({"cache": on, "cache_peaks": on_peaks, "memory": off,
                     "memory_peaks": off_peaks})
        c = [str(i + 1), f"{on['images_per_s']:.1f}", f"{on_peaks['VmHWM'] / 2**20:.0f}",
             f"{off['images_per_s']:.1f}", f"{off_peaks['VmHWM'] / 2**20:.0f}"]
        rows.append(c)
        print(f"2D: cache {c[1]} images/s ({c[2]}"
              f" MB), memory {c[3]} images/s "
              f"({c[4]} MB)", flush=True)
    end = (f"2D images/s, cache / memory (median of {a.rounds}): "
           f"{statistics.median(ratios):.2f} x  ({', '.join(f'{r:.2f}' for r in ratios)})")
    print(end)
    if a.work is None and not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return ({"rounds": runs, "ratios": ratios},
            [table("2D tiles: training from the cache against memory",
                   ["round", "cache images/s", "cache peak resident MB", "memory images/s",
                    "memory peak resident MB"], rows, [end])])


def make_folders(a, work: Path) -> tuple[dict, dict]:
    """The small, sixth and full folders (kept when already there): cases and GB of each."""
    per_case = a.side ** 3 * 5 / 1e9
    n_big = max(12, int(round(a.gb / per_case)))
    sizes = {"small": a.small_cases, "sixth": max(8, n_big // 6), "full": n_big}
    gbs = {}
    for name, n in sizes.items():
        folder = work / name
        if not (folder / "masks").is_dir() or len(list((folder / "masks").iterdir())) != n:
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            gbs[name] = generate(folder, n, a.side, seed=len(name))
            print(f"generated {name}: {n} cases of {a.side}³, {gbs[name]:.2f} GB decoded "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        else:
            gbs[name] = n * per_case
    return sizes, gbs


def full_run(a, work: Path, cache: Path, env: dict) -> tuple[dict, list[dict]]:
    sizes, gbs = make_folders(a, work)
    try:
        build, b_rows = cache_builds(sizes, gbs, work, cache, env)
        rows, t_rows = trainings(sizes, gbs, work, env)
        ratios = []
        for _ in range(a.rounds):
            on, _, _ = train_child(work / "small", "on", env)
            off, _, _ = train_child(work / "small", "off", env)
            ratios.append(on["images_per_s"] / off["images_per_s"])
        s_peaks, s_secs = search_child(work, cache, env)
    finally:
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    lines = summary(a, sizes, gbs, build, rows, ratios, s_peaks)
    results = {"cases": sizes, "gb": gbs,
               "cache_build": {n: {"seconds": s, "peaks": p} for n, (s, p) in build.items()},
               "trainings": [{"folder": n, "cache": m, **r, "peaks": p, "seconds": s}
                             for n, m, r, p, s in rows],
               "small_cache_vs_memory": ratios, "search": {"peaks": s_peaks, "seconds": s_secs}}
    return results, [
        table("Cache build", ["folder", "s", "s/GB", "peak resident MB"], b_rows),
        table("Short training, through the cache and in memory",
              ["folder", "path", "GB data", "peak resident MB", "anonymous MB", "images/s", "s"],
              t_rows),
        table("Summary", ["measure", "value"], lines + [[
            "search (2 trials, full folder, cache)",
            f"peak resident {s_peaks['VmHWM'] / 2**20:.0f} MB, {s_secs:.0f} s"]])]


def cache_builds(sizes: dict, gbs: dict, work: Path, cache: Path, env: dict
                 ) -> tuple[dict, list[list[str]]]:
    """The cache build of each folder, measured on its own (a child that only opens the data)."""
    build, rows = {}, []
    for name in sizes:
        code = ("import sys; from nas_attn.data import DataConfig, load_data; "
                "load_data(DataConfig(source=sys.argv[1], cache='on', val_pattern='val_*'))")
        for d in cache.glob(f"{name}-*") if cache.is_dir() else []:
            shutil.rmtree(d)
        _, peaks, secs = watched([sys.executable, "-c", code, str(work / name)], env)
        build[name] = (secs, peaks)
        rows.append([name, f"{secs:.1f}", f"{secs / gbs[name]:.1f}",
                     f"{peaks.get('VmHWM', 0) / 2**20:.0f}"])
        print(f"cache build {name}: {rows[-1][1]} s ({rows[-1][2]} s/GB), peak "
              f"resident {rows[-1][3]} MB", flush=True)
    return build, rows


def trainings(sizes: dict, gbs: dict, work: Path, env: dict) -> tuple[list, list[list[str]]]:
    """The short training on each folder through the cache and (but the full one) in memory."""
    rows, cells = [], []
    for name in sizes:
        for mode in ("on", "off"):
            if mode == "off" and name == "full":
                continue  # would not fit the cap: that is the point
            res, peaks, secs = train_child(work / name, mode, env)
            rows.append((name, mode, res, peaks, secs))
            c = [name, "cache" if mode == "on" else "memory", f"{gbs[name]:.2f}",
                 f"{peaks['VmHWM'] / 2**20:.0f}", f"{peaks.get('RssAnon', 0) / 2**20:.0f}",
                 f"{res['images_per_s']:.2f}", f"{secs:.0f}"]
            cells.append(c)
            print(f"train {name:5s} {c[1]:6s}: "
                  f"{c[2]:>5s} GB data, peak resident {c[3]:>6s} MB "
                  f"(anonymous {c[4]:>5s} MB), "
                  f"{c[5]} images/s, {c[6]} s", flush=True)
    return rows, cells


def summary(a, sizes, gbs, build, rows, ratios, s_peaks) -> list[list[str]]:
    """Print the summary lines; each as (measure, value)."""
    cap = a.cap_gb * 2**30
    on_peaks = {n: p["VmHWM"] for n, m, _, p, _ in rows if m == "on"}
    off_peaks = {n: p["VmHWM"] for n, m, _, p, _ in rows if m == "off"}
    worst = max(max(on_peaks.values()), s_peaks["VmHWM"])
    full_build = build["full"][0]
    lines = [
        ("dataset sizes (decoded)", ": ", ", ".join(f"{n} {gbs[n]:.2f} GB" for n in sizes)),
        ("peak resident, cache", ":  ", ", ".join(f"{n} {v / 2**20:.0f} MB" for n, v in
                                                  on_peaks.items())
         + f"  (full / small {on_peaks['full'] / on_peaks['small']:.2f} x)"),
        ("peak resident, memory", ": ", ", ".join(f"{n} {v / 2**20:.0f} MB" for n, v in
                                                  off_peaks.items())
         + f"  (sixth / small {off_peaks['sixth'] / off_peaks['small']:.2f} x)"),
        (f"cap {a.cap_gb:g} GB", ": ", f"cache path peak {worst / 2**30:.2f} GB "
         f"({'within' if worst <= cap else 'ABOVE'}); full folder {gbs['full'] / a.cap_gb:.1f} "
         "x the cap"),
        ("cache build", ": ", f"{full_build / gbs['full']:.1f} s per GB decoded "
         f"({full_build:.0f} s for {gbs['full']:.2f} GB)"),
        (f"images/s, cache / memory (small folder, median of {a.rounds})", ": ",
         f"{statistics.median(ratios):.2f} x  ({', '.join(f'{r:.2f}' for r in ratios)})")]
    print()
    for label, sep, value in lines:
        print(label + sep + value)
    return [[label, value] for label, _, value in lines]


if __name__ == "__main__":
    main()
