"""Inference speed against MONAI's sliding window, and ONNX Runtime against torch, as ratios.

    python benchmarks/predict_speed.py [--rounds 6] [--threads 2] [--skip-onnx] [--out results.json]

On the shared 2D set (dsb2018-nuclei, 128x128 tiles, patch 64x64) and 3D set
(inia19-macaque-3d, 168x16x128 slabs, patch 64x16x64), one network per dimensionality with
attention (the built-in search winner on the search-quality page (docs/benchmarks/search-quality.md) in 2D; a depth-3 3D UNet with cbam, position,
gate and cross), random weights (speed only), exported once with `nas_attn.exporting.export_arch`:

1. `nas-attn predict`'s path (`nas_attn.inference.prediction.load_model` on the export folder, then
   `predict_array`: normalisation, sliding window, Gaussian blending, label map), the exported
   model.py's `predict(image, model)`, and `monai.inferers.sliding_window_inference` (Gaussian,
   same overlap, sigma and patch batch) with the same network, after the same normalisation and
   followed by the same argmax, timed in interleaved rounds in one process. Printed: seconds per image and
   MONAI / nas-attn (target >= 1.0x: nas-attn at least as fast), MONAI / model.py, and the
   largest logit difference of the two sliding windows (they are meant to be equal). The arms
   take turns going first; one round runs every image once per arm.
2. ONNX Runtime (CPUExecutionProvider) against torch on the CPU: the exported model.onnx and
   the eager model on the same batch of patches; printed torch / onnxruntime.
3. The sliding windows alone (a 1x1 convolution as the network): nas-attn's and MONAI's.
Ratios are medians over rounds (a shared machine is noisy).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_attn.architecture.description import AttnSpec as A  # noqa: E402
from nas_attn.architecture.description import UNetArch  # noqa: E402
from nas_attn.exporting import export_arch, load_model_py  # noqa: E402
from nas_attn.models.infer import labels_from_output, predict_logits  # noqa: E402
from nas_attn.inference.prediction import load_model, predict_array, read_image  # noqa: E402
from nas_attn.architecture.builder import build_unet  # noqa: E402

DATA = Path("/work/shared/data")
OVERLAP = 0.25

SETS = {
    2: dict(files=sorted((DATA / "dsb2018-nuclei" / "images").glob("*.png"))[:8], patch=(64, 64),
            arch=UNetArch(spatial_dims=2, depth=3, widths=(16, 32, 64, 128), upsample="interp",
                          classes=2, encoder=(A.make("cbam", kernel_size=3, reduction=4),
                                              A.make("se", reduction=8), A.make("self", heads=2)),
                          bottleneck=A.make("position"), skip=(A.make("scse"), A.make("cross"),
                                                               None),
                          decoder=(A.make("eca"), None, A.make("eca")))),
    3: dict(files=sorted((DATA / "inia19-macaque-3d" / "imagesTs").glob("*.nii.gz"))[:3],
            patch=(64, 16, 64),
            arch=UNetArch(spatial_dims=3, depth=3, widths=(8, 16, 32, 64), classes=3,
                          encoder=(A.make("cbam", reduction=4), None, None),
                          bottleneck=A.make("position"),
                          skip=(A.make("gate"), A.make("cross", heads=2), None))),
}


def _export(arch: UNetArch, patch, out: Path, onnx: bool):
    torch.manual_seed(0)
    model = build_unet(arch).eval()
    with torch.no_grad():  # residual gammas start at 0: let the attention count
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return export_arch(arch, out, weights=model.state_dict(), formats=("onnx",) if onnx else (),
                       input_size=patch, inference={"patch_size": list(patch),
                                                    "overlap": OVERLAP})


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def speed(dims: int, rounds: int, onnx: bool) -> dict:
    """The measurements of one dimensionality: seconds per round and arm, the ratios, the ONNX
    comparison; with `cells`, the figures as printed."""
    from monai.inferers import sliding_window_inference

    cfg = SETS[dims]
    if not cfg["files"]:
        print(f"{dims}D: no images under {DATA}; skipped")
        return {"skipped": f"no images under {DATA}"}
    with tempfile.TemporaryDirectory() as tmp:
        files = _export(cfg["arch"], cfg["patch"], Path(tmp) / "export", onnx)
        loaded = load_model(Path(tmp) / "export", device="cpu")
        module = load_model_py(files["model"])
        exported = module.load(files["weights"])
        images = [read_image(f, loaded.arch) for f in cfg["files"]]
        inputs = [loaded.normalise(im) for im in images]

        def ours():
            for im in images:
                predict_array(loaded, im)

        def model_py():
            for im in images:
                module.predict(im, exported)

        def monai():  # the same normalisation first: what a MONAI user would run too
            for im in images:
                x = loaded.normalise(im)
                with torch.no_grad():
                    y = sliding_window_inference(x, cfg["patch"], 4, loaded.model,
                                                 overlap=OVERLAP, mode="gaussian",
                                                 sigma_scale=0.125)
                labels_from_output(y).numpy()

        with torch.no_grad():
            diff = max(float((predict_logits(loaded.model, x, patch_size=cfg["patch"],
                                             overlap=OVERLAP)[0] - sliding_window_inference(
                x, cfg["patch"], 4, loaded.model, overlap=OVERLAP, mode="gaussian",
                sigma_scale=0.125)).abs().max()) for x in inputs[:2])
        times = {"nas-attn": [], "model.py": [], "monai": []}
        arms = [("nas-attn", ours), ("model.py", model_py), ("monai", monai)]
        for _ in range(2):  # warm-up (oneDNN builds its kernels for each new shape)
            for _, fn in arms:
                fn()
        for r in range(rounds):  # interleaved, each arm first in turn (no position bias)
            for name, fn in arms[r % 3:] + arms[:r % 3]:
                times[name].append(_timed(fn))
        out = _print_speed(dims, images, cfg["patch"], times, diff)
        if onnx:
            out["onnx"] = _onnx_ratio(files["onnx"], loaded.model, cfg["patch"], rounds)
        return out


def _print_speed(dims: int, images, patch, times: dict, diff: float) -> dict:
    """Print one dimensionality's seconds per image and ratios; the numbers and the cells."""
    n = len(images)
    shape = "x".join(map(str, images[0].shape[1:]))
    out = {"images": n, "shape": shape, "patch": "x".join(map(str, patch)),
           "max_logit_diff": diff, "seconds": times, "cells": {"diff": f"{diff:.2e}"}}
    print(f"{dims}D: {n} images of {shape}, patch {out['patch']}, "
          f"overlap {OVERLAP}; max |nas-attn - MONAI| logits {diff:.2e}")
    for name in times:
        out["cells"][name] = f"{statistics.median(times[name]) / n * 1000:.1f}"
        print(f"  {name:9s} {out['cells'][name]:>8s} ms/image")
    ratio = [m / o for m, o in zip(times["monai"], times["nas-attn"])]
    ratio_py = [m / o for m, o in zip(times["monai"], times["model.py"])]
    out.update(monai_vs_nas_attn=statistics.median(ratio),
               monai_vs_model_py=statistics.median(ratio_py))
    out["cells"].update(ratio=f"{out['monai_vs_nas_attn']:.2f}x",
                        ratio_py=f"{out['monai_vs_model_py']:.2f}x")
    print(f"  MONAI / nas-attn predict: {out['cells']['ratio']} (target >= 1.0x); "
          f"MONAI / model.py predict: {out['cells']['ratio_py']}")
    return out


def _onnx_ratio(path: Path, model, patch, rounds: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, *patch)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    with torch.no_grad():
        diff = float(np.abs(sess.run(None, feed)[0] - model(x).numpy()).max())
        model(x)
        ratios = []
        for _ in range(rounds):
            t_torch = _timed(lambda: [model(x) for _ in range(3)])
            t_ort = _timed(lambda: [sess.run(None, feed) for _ in range(3)])
            ratios.append(t_torch / t_ort)
    out = {"torch_vs_onnxruntime": statistics.median(ratios), "max_diff": diff,
           "threads": torch.get_num_threads(), "ratios": ratios,
           "cells": {"ratio": f"{statistics.median(ratios):.2f}x", "diff": f"{diff:.2e}"}}
    print(f"  ONNX Runtime vs torch (batch of 4 patches, CPU, {torch.get_num_threads()} threads): "
          f"torch / onnxruntime {out['cells']['ratio']}; max |difference| {out['cells']['diff']}")
    return out


def window_overhead(dims: int, rounds: int) -> dict:
    """The sliding windows alone: a 1x1 convolution as the network, same image size and patch."""
    from monai.inferers import sliding_window_inference

    size = (128, 128) if dims == 2 else (168, 16, 128)
    patch = SETS[dims]["patch"]
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(1, 2, 1).eval()
    x = torch.randn(1, 1, *size)

    def ours():
        predict_logits(conv, x, patch_size=patch, overlap=OVERLAP)

    def monai():
        with torch.no_grad():
            sliding_window_inference(x, patch, 4, conv, overlap=OVERLAP, mode="gaussian",
                                     sigma_scale=0.125)

    for fn in (ours, monai, ours, monai):
        fn()
    t_ours, t_monai = [], []
    for _ in range(rounds * 5):
        t_ours.append(_timed(ours))
        t_monai.append(_timed(monai))
    out = {"nas_attn_s": t_ours, "monai_s": t_monai,
           "cells": {"nas-attn": f"{statistics.median(t_ours) * 1000:.1f}",
                     "monai": f"{statistics.median(t_monai) * 1000:.1f}"}}
    print(f"  window alone (1x1 conv as the network): nas-attn "
          f"{out['cells']['nas-attn']} ms, MONAI {out['cells']['monai']} ms")
    return out


def _without_cells(d: dict) -> dict:
    """The raw numbers of a measurement (its printed cells go to the table)."""
    return {k: _without_cells(v) if isinstance(v, dict) else v for k, v in d.items()
            if k != "cells"}


def report(results: dict) -> list[dict]:
    """One row per dimensionality holding the figures the run printed."""
    from results_file import table

    columns = ["set", "images", "patch", "max logit difference", "nas-attn ms/image",
               "model.py ms/image", "MONAI ms/image", "MONAI / nas-attn", "MONAI / model.py",
               "torch / onnxruntime", "ONNX max difference", "window alone: nas-attn ms",
               "window alone: MONAI ms"]
    rows, notes = [], []
    for dims, r in results.items():
        s, w = r["speed"], r["window"]["cells"]
        if "skipped" in s:
            notes.append(f"{dims}D: {s['skipped']}; skipped")
            continue
        c, o = s["cells"], s.get("onnx", {}).get("cells", {})
        rows.append([f"{dims}D", f"{s['images']} of {s['shape']}", s["patch"], c["diff"],
                     c["nas-attn"], c["model.py"], c["monai"], c["ratio"], c["ratio_py"],
                     o.get("ratio", "-"), o.get("diff", "-"), w["nas-attn"], w["monai"]])
    notes.append(f"overlap {OVERLAP}; target MONAI / nas-attn >= 1.0x; ratios are medians over "
                 "rounds; ONNX Runtime against torch on a batch of 4 patches, CPU")
    return [table("Inference speed against MONAI and ONNX Runtime", columns, rows, notes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--out", default=None, help="also write the results here (JSON with the "
                    "date, commit and machine; benchmarks/render.py builds the docs' table)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    results = {}
    for dims in (2, 3):
        results[dims] = {"speed": speed(dims, args.rounds, not args.skip_onnx),
                         "window": window_overhead(dims, args.rounds)}
    if args.out:
        import results_file

        raw = {f"{d}D": {k: _without_cells(v) for k, v in r.items()}
               for d, r in results.items()}
        path = results_file.write(args.out, "predict_speed", vars(args), raw, report(results),
                                  device=f"cpu, {args.threads} torch threads")
        print(f"written: {path}")


if __name__ == "__main__":
    main()
