"""nnU-Net v2 side by side: the baseline users would run instead, on the same training cases, at
equal optimizer steps x batch, scored on the same test cases by both tools' evaluations.

    pip install -e ".[nnunet]"                # nnunetv2 (also in the dev extra)
    python benchmarks/vs_nnunet.py --data ../shared/data/inia19-macaque \
        --test-data ../shared/data/inia19-macaque-test --work W [--arms ...]
    python benchmarks/vs_nnunet.py --data ../shared/data/inia19-macaque-3d --work W3
    # with a finalize on the same training cases (e.g. search_quality.py's per-trial arm):
    python benchmarks/vs_nnunet.py ... --finalize RUNS/searched/final/finalize.json

Arms (`--arms`, default all, the two winner arms only with `--finalize`; each is kept in
W/results.json once done, so a killed run resumes; nnU-Net's own training resumes from its latest
checkpoint; arms may run in parallel processes on the same W, nnunet_time once nasattn_plain is
done):

- `nnunet`: nnU-Net's own plans (`nnUNetv2_plan_and_preprocess`: its network, patch, batch,
  spacing, normalisation), its trainer with epochs x iterations set so that iterations x its
  batch equal nas-attn's full budget (steps x batch);
- `nnunet_time`: the same, stopped at the CPU seconds the nas-attn plain UNet took (a time
  budget instead of a step budget);
- `nnunet_narrow`: nnU-Net's recipe with its network narrowed to the nas-attn plain UNet's
  depth and widths (its plans edited), so that the recipe and the network size are compared
  separately;
- `nasattn_plain`: nas-attn's plain UNet (the `default` space's plain baseline) at its full
  budget (`nas-attn train`);
- `nnunet_searched`: nnU-Net training `--arch` (a searched placement, default: self-attention
  at the third encoder level and position attention at the bottleneck, what the docs'
  built-in winners used) through `nas-attn export --format nnunet`'s plans;
- `nasattn_searched`: nas-attn training the same placement with its own recipe at its full
  budget (as `nasattn_plain`), so that the placement is seen under both recipes;
- `nasattn_winner` (with `--finalize F`): the model a `finalize` on these training cases
  recommends (F: its finalize.json). The checkpoints finalize trained it with at the same full
  budget (its confirmation seeds, else its race seeds) predict the test cases; nothing is
  retrained, so its seconds are finalize's wall seconds per training;
- `nnunet_winner` (with `--finalize F`): nnU-Net training that recommended architecture through
  the bridge (`nas-attn export --format nnunet`'s plans), as `nnunet_searched` does for `--arch`.

Every arm's test predictions are scored by nas-attn (pooled Dice per class, from per-case
counts, with the 95 % interval over cases) and by nnU-Net's `compute_metrics_on_folder` (Dice per
case and class, averaged over cases, then classes). The two are different statistics; the
benchmark recomputes nnU-Net's from nas-attn's per-case counts and checks they agree. Each arm is
compared with the nas-attn plain UNet, and each nas-attn arm with nnU-Net's own plans, by the
one paired comparison on the test cases (one run each: cases only). Results go to W/results.json with the date, commit and machine.

The data's train / validation split is nas-attn's (train.txt / val.txt, or its random split),
written as nnU-Net's fold 0 (`splits_final.json`). `nnUNet_n_proc_DA=0` is set for training and
prediction only (the planner fails with it). Runs on the CPU (`--device cuda` for a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET_ID = {2: 731, 3: 732}
SEARCHED = ("encoder.2", "self"), ("bottleneck", "position")


# ----- data -------------------------------------------------------------------------------------
def nas_split(data: str):
    """nas-attn's train / val split of the folder (what its trainings use) and its data."""
    from nas_attn.data import DataConfig, load_data

    cfg = DataConfig(source=data)
    tr, va = load_data(cfg)
    return cfg, tr, va


def to_raw(args, tr_names, va_names, test_dir: Path | None) -> tuple[Path, dict]:
    """The data in nnU-Net v2's raw layout (a 3D set already in it is linked), its dataset.json."""

    src = Path(args.data)
    raw = Path(args.work) / "nnUNet_raw"
    dims = 3 if (src / "dataset.json").exists() else 2
    name = f"Dataset{DATASET_ID[dims]:03d}_{src.name.replace('-', '')}"
    out = raw / name
    if (out / "dataset.json").exists():
        return out, json.loads((out / "dataset.json").read_text())
    if dims == 3:
        shutil.copytree(src, out, symlinks=True)
        return out, json.loads((out / "dataset.json").read_text())
    from PIL import Image

    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    classes = 0
    for case in tr_names + va_names:
        shutil.copy(src / "images" / f"{case}.png", out / "imagesTr" / f"{case}_0000.png")
        shutil.copy(src / "masks" / f"{case}.png", out / "labelsTr" / f"{case}.png")
        classes = max(classes, int(np.asarray(Image.open(src / "masks" / f"{case}.png")).max()))
    for img in sorted((test_dir / "images").glob("*.png")) if test_dir else []:
        shutil.copy(img, out / "imagesTs" / f"{img.stem}_0000.png")
        shutil.copy(test_dir / "masks" / img.name, out / "labelsTs" / img.name)
    ds = {"channel_names": {"0": "T1"},
          "labels": {"background": 0, **{f"class_{k}": k for k in range(1, classes + 1)}},
          "numTraining": len(tr_names) + len(va_names), "file_ending": ".png"}
    (out / "dataset.json").write_text(json.dumps(ds, indent=1))
    return out, ds


def nnunet_env(work: Path) -> dict:
    return {"nnUNet_raw": str(work / "nnUNet_raw"),
            "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
            "nnUNet_results": str(work / "nnUNet_results")}


def plan(args, name: str, tr_names, va_names) -> tuple[Path, str]:
    """nnU-Net plans and preprocesses the data itself; fold 0 is nas-attn's split."""
    work = Path(args.work)
    pre = work / "nnUNet_preprocessed" / name
    conf = "3d_fullres" if name.startswith(f"Dataset{DATASET_ID[3]}") else "2d"
    if not (pre / "nnUNetPlans.json").exists():
        env = {**os.environ, **nnunet_env(work)}
        env.pop("nnUNet_n_proc_DA", None)  # the planner calls set_num_threads with it: 0 fails
        subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", name.split("_")[0][7:], "-c",
                        conf, "-np", "1", "--verify_dataset_integrity"], env=env, check=True)
    splits = [{"train": sorted(tr_names), "val": sorted(va_names)}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return pre, conf


# ----- nnU-Net training and prediction (a child process: nnU-Net reads its folders from the
# environment when imported, and its trainer class must be importable by name there) ----------
CHILD = r'''
import json, sys, time, torch
from batchgenerators.utilities.file_and_folder_operations import load_json, join
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import \
    nnUNetTrainerNoMirroring
job = json.loads(sys.argv[1])

class Stop(Exception):
    pass

class BudgetTrainer(nnUNetTrainerNoMirroring):
    """nnU-Net's trainer (no mirroring: the labels are lateralised), its budget set."""
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = job["epochs"]
        self.num_iterations_per_epoch = job["iterations"]
        self.num_val_iterations_per_epoch = 5
        self.save_every = 1  # checkpoint_latest after every epoch (nnU-Net's default is 50): a
        # killed arm resumes from its last finished epoch, not from the start
    def on_epoch_end(self):
        super().on_epoch_end()
        if job.get("cpu_s") and time.process_time() > job["cpu_s"]:
            raise Stop

# one class name per kind of budget: nnU-Net names its output folder after the trainer class, so
# the time-matched arm must not find (and reuse) the step-matched arm's final checkpoint
BudgetTrainer = type(job["trainer"], (BudgetTrainer,), {})
pre = job["preprocessed"]
plans = load_json(join(pre, job["plans"] + ".json"))
ds = load_json(join(pre, "dataset.json"))
import os
out_base = join(os.environ["nnUNet_results"], plans["dataset_name"],
                job["trainer"] + "__" + plans["plans_name"] + "__" + job["configuration"], "fold_0")
latest = join(out_base, "checkpoint_latest.pth")
final = join(out_base, "checkpoint_final.pth")
plans["continue_training"] = os.path.exists(latest)  # what nnU-Net's run_training passes
trainer = BudgetTrainer(plans, job["configuration"], 0, ds, device=torch.device(job["device"]))
if not os.path.exists(final):
    if os.path.exists(latest):
        trainer.load_checkpoint(latest)
    t0 = time.process_time()
    try:
        trainer.run_training()
    except Stop:
        trainer.on_train_end()
    with open(join(out_base, "budget.json"), "w") as f:
        json.dump({"epochs": trainer.current_epoch, "cpu_s": time.process_time() - t0}, f)
done = load_json(join(out_base, "budget.json"))
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
ckpt = torch.load(final, map_location="cpu", weights_only=False)
pm = trainer.plans_manager
cm = trainer.configuration_manager
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
net = BudgetTrainer.build_network_architecture(pm, cm, determine_num_input_channels(pm, cm, ds),
                                               trainer.label_manager.num_segmentation_heads,
                                               enable_deep_supervision=False)
net.load_state_dict(ckpt["network_weights"])
pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                       device=torch.device(job["device"]), verbose=False, allow_tqdm=False)
pred.manual_initialization(net, pm, cm, [ckpt["network_weights"]], ds, job["trainer"], None)
os.makedirs(job["out"], exist_ok=True)
pred.predict_from_files_sequential(job["images"], job["out"], save_probabilities=False,
                                   overwrite=True)
print(json.dumps({"epochs": done["epochs"], "iterations": job["iterations"],
                  "batch": cm.batch_size, "cpu_s": round(done["cpu_s"])}))
'''


def run_nnunet(args, pre: Path, raw: Path, conf: str, plans_name: str, arm: str,
               samples: int, cpu_s: float | None = None) -> dict:
    """Train and predict one nnU-Net arm in a child process; its record."""
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    batch = plans["configurations"][conf]["batch_size"]
    total = max(1, round(samples / batch))  # iterations x batch = nas-attn's steps x batch
    epochs = max(1, round(total / 250))
    job = {"preprocessed": str(pre), "plans": plans_name, "configuration": conf,
           "epochs": epochs if cpu_s is None else 10 ** 6,
           "iterations": max(1, round(total / epochs)) if cpu_s is None else 25,
           "cpu_s": cpu_s, "device": args.device, "images": str(raw / "imagesTs"),
           "trainer": "BudgetTrainer" if cpu_s is None else "TimeBudgetTrainer",
           "out": str(Path(args.work) / "predictions" / arm)}
    env = {**os.environ, **nnunet_env(Path(args.work)), "nnUNet_n_proc_DA": "0",
           "nnUNet_def_n_proc": "1"}
    folder = (Path(args.work) / "nnUNet_results" / plans["dataset_name"]
              / f"{job['trainer']}__{plans['plans_name']}__{conf}" / "fold_0")  # as CHILD names it
    length = f"{epochs} epochs" if cpu_s is None else f"epochs until {cpu_s:.0f} CPU s"
    print(f"{arm}: nnU-Net trains {length} of {job['iterations']} iterations; its progress: "
          f"{folder}/training_log_*.txt", flush=True)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"nnU-Net arm {arm} failed:\n{out.stderr[-3000:]}")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return {**rec, "steps": rec["epochs"] * rec["iterations"],
            "samples": rec["epochs"] * rec["iterations"] * rec["batch"],
            "wall_s": round(time.time() - t0), "predictions": job["out"]}


# ----- nas-attn arms ------------------------------------------------------------------------------
def run_nasattn(args, cfg, tr, va, test_images: Path, out: Path, arch=None,
                seed: int = 0) -> dict:
    """The `default` space's plain UNet (or `arch`, with the plain UNet's recipe) at its full
    budget on nas-attn's split, under `seed`; its test predictions (named like the labels)."""
    from nas_attn.searching.space import full_budget
    from nas_attn.searching.noise_check import plain_baseline
    from nas_attn.searching.sampling import DataInfo
    from nas_attn.searching.space_files import load_space
    from nas_attn.training import TrainConfig, train

    space = load_space("default")
    plain, overrides = plain_baseline(space, DataInfo(tr.spatial_dims, tr.in_channels,
                                                      tr.classes, tr.aux_channels))
    arch = plain if arch is None else arch
    opts = {**overrides, **full_budget(space), "max_time_s": None, "seed": seed}
    if args.epochs:
        opts["epochs"] = args.epochs
    if args.device:
        opts["device"] = args.device
    tcfg = TrainConfig.make(**opts)
    c0, t0 = time.process_time(), time.time()
    arm = out.name
    out = out if seed == 0 else out / f"seed{seed}"

    def epoch_line(epoch, m):  # a long arm (over an hour in 3D on 2 cores) says how far it is
        print(f"  {arm} seed {seed}: epoch {epoch}/{tcfg.epochs}, val Dice "
              f"{m['dice']:.4f}, {time.time() - t0:.0f} s", flush=True)

    res = train(arch, tr, va, cfg, tcfg, out_dir=out / "train", preview=False,
                on_epoch=epoch_line)
    cpu = time.process_time() - c0
    steps = res.steps
    pred_dir = out / "predictions"
    predict_test(res.trained(), test_images, pred_dir)
    return {"steps": steps, "batch": tcfg.batch_size, "samples": steps * tcfg.batch_size,
            "cpu_s": round(cpu), "wall_s": round(time.time() - t0), "seed": seed,
            "arch": arch.summary(), "predictions": str(pred_dir)}


def predict_test(model, images: Path, pred_dir: Path) -> None:
    """nas-attn's predictions of the test images (a trained model or a checkpoint), named like
    the labels: nnU-Net's image names carry the channel (_0000), its label names do not."""
    from nas_attn.api import predict

    predict(model, str(images), str(pred_dir), force=True)
    for p in pred_dir.iterdir():
        if "_0000." in p.name:
            p.rename(p.with_name(p.name.replace("_0000.", ".")))


def more_seeds(args, results: dict, arm: str, cfg, tr, va, raw, ending: str, save) -> None:
    """Seeds 1 .. --seeds - 1 of a nas-attn arm (seed 0 is the arm's own record), each kept in
    the arm's `extra_seeds` once scored, so that its comparisons count the training noise."""
    rec = results["arms"][arm]
    extra = rec.setdefault("extra_seeds", [])
    for seed in range(1 + len(extra), args.seeds):
        print(f"{arm}: seed {seed}", flush=True)
        run = run_nasattn(args, cfg, tr, va, test_images(args, raw), args.work / arm,
                          arch=nasattn_arch(args, arm, tr), seed=seed)
        run["test"] = score(Path(run["predictions"]), raw / "labelsTs", ending, tr.classes)
        extra.append(run)
        save()


def test_images(args, raw: Path) -> Path:
    """The test images nas-attn predicts: the separate test folder's, else imagesTs."""
    return Path(args.test_data) / "images" if args.test_data else raw / "imagesTs"


def placement(args, tr):
    """The searched placement (`--arch`, else SEARCHED) at the data's dimensionality."""
    import dataclasses

    from nas_attn.architecture.description import UNetArch

    arch = UNetArch.from_json(Path(args.arch).read_text()) if args.arch else searched_arch()
    return dataclasses.replace(arch, spatial_dims=tr.spatial_dims)


def nasattn_arch(args, arm: str, tr):
    """The architecture a nas-attn arm trains: None for the plain UNet, else the searched
    placement at the data's channels and classes."""
    if arm == "nasattn_plain":
        return None
    import dataclasses

    return dataclasses.replace(placement(args, tr), in_channels=tr.in_channels,
                               classes=tr.classes)


def searched_arch(plain_summary_arch=None, depth: int = 3):
    """The searched placement nnU-Net trains (`--arch` JSON, else SEARCHED on the plain UNet of
    the `default` space's size)."""
    from nas_attn.architecture.description import AttnSpec, UNetArch

    arch = UNetArch(depth=depth, widths=tuple(8 * 2 ** i for i in range(depth + 1)))
    return arch.with_sites(**{site.replace(".", "_"): AttnSpec.make(name)
                              for site, name in SEARCHED})


def narrow_plans(pre: Path, conf: str, depth: int, widths) -> str:
    """nnU-Net's plans with its network cut to nas-attn's plain UNet: depth + 1 stages of the
    given widths, strides 2, two convs per stage; the rest (recipe, data) unchanged."""
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "nnUNetPlans_narrow"
    a = plans["configurations"][conf]["architecture"]["arch_kwargs"]
    d = len(plans["configurations"][conf]["patch_size"])
    a.update(n_stages=depth + 1, features_per_stage=list(widths),
             strides=[[1] * d] + [[2] * d] * depth, kernel_sizes=[[3] * d] * (depth + 1),
             n_conv_per_stage=[2] * (depth + 1), n_conv_per_stage_decoder=[2] * depth)
    (pre / "nnUNetPlans_narrow.json").write_text(json.dumps(plans, indent=1))
    return "nnUNetPlans_narrow"


# ----- a finalize's recommended model -------------------------------------------------------------
def finalized(path: Path, data: str, tr, va) -> dict:
    """The recommended model of a finalize.json, with the run (confirmation seeds if any, else
    the race's) that trained it; refused unless it was made on this data's training split."""
    fin = json.loads(Path(path).read_text())
    if Path(fin["data"]).resolve() != Path(data).resolve():
        raise SystemExit(f"{path}: finalize ran on {fin['data']}, not on --data {data}")
    split = fin.get("splits", {})
    if (split.get("train"), split.get("val")) != (len(tr), len(va)):
        raise SystemExit(f"{path}: finalize's split {split} is not this data's "
                         f"(train {len(tr)}, val {len(va)})")
    key = fin["recommended"]["key"]
    rows = [*fin.get("confirmation", {}).get("rows", []), *fin["candidates"]]
    row = next(r for r in rows if r["key"] == key)
    return {"file": str(path), "key": key, "arch": fin["recommended"]["arch"],
            "summary": fin["recommended"]["summary"],
            "verdict": fin.get("attention_gain", {}).get("verdict", ""),
            "seeds": row["seeds"], "checkpoints": row["checkpoints"],
            "seconds": row["seconds"], "train_config": row["train_config"]}


def winner_arch(winner: dict):
    from nas_attn.architecture.description import UNetArch

    return UNetArch.from_json(json.dumps(winner["arch"]))


def winner_runs(args, raw: Path, classes: int) -> dict:
    """The recommended model's finalize checkpoints on the test cases: seed 0's record is the
    first, the others its extra_seeds (scored here, as more_seeds does)."""
    w, runs = args.winner, []
    tc = w["train_config"]
    samples = tc["epochs"] * tc["samples_per_epoch"]
    for seed, ckpt, secs in zip(w["seeds"], w["checkpoints"], w["seconds"]):
        pred_dir = args.work / "nasattn_winner" / f"seed{seed}" / "predictions"
        predict_test(ckpt, test_images(args, raw), pred_dir)
        runs.append({"steps": samples // tc["batch_size"], "batch": tc["batch_size"],
                     "samples": samples, "cpu_s": None, "wall_s": round(secs),
                     "seed": seed, "checkpoint": ckpt, "arch": w["summary"],
                     "finalize": w["file"], "finalize_verdict": w["verdict"],
                     "predictions": str(pred_dir)})
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    for run in runs[1:]:
        run["test"] = score(Path(run["predictions"]), raw / "labelsTs", ending, classes)
    return {**runs[0], "extra_seeds": runs[1:]}


# ----- scoring ------------------------------------------------------------------------------------
def _read(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path)).astype(np.int64)
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj).astype(np.int64)


def score(pred_dir: Path, ref_dir: Path, ending: str, classes: int) -> dict:
    """nas-attn's pooled Dice (per-case counts, 95 % interval) and nnU-Net's per-case mean of
    the same predictions; nnU-Net's statistic recomputed from nas-attn's counts."""
    from nas_attn.stats.compare import estimate
    from nas_attn.inference.metrics import MetricAccumulator

    acc = MetricAccumulator(classes)
    refs = sorted(ref_dir.glob(f"*{ending}"))
    for ref in refs:
        acc.add(_read(pred_dir / ref.name), _read(ref), name=ref.name[:-len(ending)])
    counts = acc.case_counts()
    tp = counts.tp.astype(float)
    den = 2 * tp + counts.fp + counts.fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(den > 0, 2 * tp / den, np.nan)
    recomputed = float(np.mean(np.nanmean(per, axis=0)))
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

    rw = determine_reader_writer_from_file_ending(ending, str(refs[0]))()
    theirs = compute_metrics_on_folder(str(ref_dir), str(pred_dir), None, rw, ending,
                                       list(range(1, classes)), num_processes=1)
    nn_mean = float(theirs["foreground_mean"]["Dice"])
    return {"pooled_dice": acc.result()["dice"], "ci": estimate([counts]).to_dict(),
            "nnunet_mean_dice": nn_mean, "nnunet_mean_recomputed": recomputed,
            "agree": bool(abs(nn_mean - recomputed) < 1e-6), "cases": counts.to_dict()}


# ----- the run ------------------------------------------------------------------------------------
ARMS = ("nasattn_plain", "nnunet", "nnunet_time", "nnunet_narrow", "nnunet_searched",
        "nasattn_searched", "nasattn_winner", "nnunet_winner")
WINNER_ARMS = ("nasattn_winner", "nnunet_winner")


def provenance() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--test-data", default=None, help="a 2D set's separate test folder")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--arms", nargs="+", default=None, choices=ARMS, help="default: all "
                    "(the winner arms only with --finalize)")
    ap.add_argument("--finalize", type=Path, default=None, help="a finalize.json of a search "
                    "on this data's training cases (at nas-attn's full budget): its recommended "
                    "model is the nasattn_winner and nnunet_winner arms' architecture")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default=None, help="JSON of the placement nnunet_searched trains")
    ap.add_argument("--out", default=None, help="also write the results here (the docs' "
                    "tables are built from benchmarks/results/vs_nnunet_*.json)")
    ap.add_argument("--epochs", type=int, default=None, help="nas-attn's budget in epochs "
                    "(default: its full budget, 30); every nnU-Net arm is matched to it")
    ap.add_argument("--seeds", type=int, default=1, help="seeds of each nas-attn arm (the "
                    "nnU-Net arms train one): comparisons of two nas-attn arms pair them by seed")
    ap.add_argument("--noise", default=None, help="a noise record of nas-attn's plain UNet on "
                    "this data (`nas-attn noise`; benchmarks/results/noise_*.json): its seed "
                    "variance counts the training noise of comparisons with one seed")
    ap.add_argument("--note", action="append", default=[], help="a line for the results' "
                    "notes (how the run was made: arms run at other commits, a shared machine)")
    args = ap.parse_args()
    if args.arms is None:
        args.arms = [a for a in ARMS if args.finalize or a not in WINNER_ARMS]
    if any(a in WINNER_ARMS for a in args.arms) and not args.finalize:
        ap.error("--arms nasattn_winner / nnunet_winner need --finalize (a finalize.json)")
    args.work = args.work.resolve()
    os.environ.update(nnunet_env(args.work))  # before nnunetv2 is imported
    cfg, tr, va = nas_split(args.data)
    args.winner = finalized(args.finalize, args.data, tr, va) if args.finalize else None
    raw, ds = to_raw(args, list(tr.names), list(va.names),
                     Path(args.test_data) if args.test_data else None)
    pre, conf = plan(args, raw.name, list(tr.names), list(va.names))
    ending = ds["file_ending"]
    results_file = args.work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.update({"data": args.data, "test_data": args.test_data, "configuration": conf,
                    "epochs": args.epochs, **provenance()})
    results.setdefault("notes", []).extend(n for n in args.note if n not in results["notes"])
    arms = [a for a in ARMS if a in args.arms]
    if "nnunet_time" in arms and "nasattn_plain" not in arms:
        arms.insert(0, "nasattn_plain")  # the CPU seconds nnunet_time is matched to
    for arm in arms:
        if arm in results.get("arms", {}):
            print(f"{arm}: done earlier")
            continue
        print(f"{arm}: running", flush=True)
        rec = run_arm(args, arm, results, cfg, tr, va, raw, pre, conf)
        rec["test"] = score(Path(rec["predictions"]), raw / "labelsTs", ending, tr.classes)
        results.setdefault("arms", {})[arm] = rec
        save_results(results_file, results)

    def save():
        save_results(results_file, results)

    if args.seeds > 1:
        for arm in (a for a in arms if a.startswith("nasattn") and a != "nasattn_winner"):
            more_seeds(args, results, arm, cfg, tr, va, raw, ending, save)
    if args.noise:
        from nas_attn.stats.noise import NoiseRecord

        rec = NoiseRecord.from_dict(json.loads(Path(args.noise).read_text()))
        results["noise"] = {"record": args.noise, "seed_sd": rec.run_sd,
                            "df": len(rec.runs) - 1}
    from nas_attn.stats.compare import estimate

    save_results(results_file, results)  # with the arms other runs finished meanwhile
    for name, rec in results.get("arms", {}).items():
        if rec.get("extra_seeds"):  # the score over seeds and cases
            rec["seeds_score"] = estimate(seed_runs(rec)).to_dict()
        rec["vs_plain"] = versus_plain(results, name)
        rec["vs_nnunet"] = versus_plain(results, name, "nnunet") if name.startswith(
            "nasattn") else ""
    save_results(results_file, results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    report(results)


def save_results(path: Path, results: dict) -> None:
    """Write the results, keeping the arms another run of this benchmark on the same --work
    folder finished meanwhile (arms may run in parallel processes, one arm each): an arm on disk
    that this run does not hold is kept, and of two records of one arm the one with more seeds."""
    if path.exists():
        disk = json.loads(path.read_text()).get("arms", {})
        arms = results.setdefault("arms", {})
        for name, rec in disk.items():
            mine = arms.get(name)
            if mine is None or len(rec.get("extra_seeds", [])) > len(mine.get("extra_seeds", [])):
                arms[name] = rec
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def seed_runs(rec: dict) -> list:
    """An arm's test runs, seed 0 first (per-case counts)."""
    from nas_attn.stats.counts import CaseCounts

    return [CaseCounts.from_dict(r["test"]["cases"]) for r in [rec, *rec.get("extra_seeds", [])]]


def versus_plain(results: dict, name: str, against: str = "nasattn_plain") -> str:
    """The one paired comparison of an arm with the nas-attn plain UNet (or `against`) on the
    test cases, the arm minus the other: paired by seed where both arms have several; with one
    seed, the training noise of the `--noise` record (nas-attn's plain UNet on this data), or
    the cases only when there is none."""
    from nas_attn.stats.compare import SeedNoise, compare

    base = results.get("arms", {}).get(against)
    if base is None or name == against:
        return ""
    a, b = seed_runs(results["arms"][name]), seed_runs(base)
    k = min(len(a), len(b))
    if k > 1:
        return compare(a[:k], b[:k]).text()
    n = results.get("noise")
    noise = SeedNoise(n["seed_sd"] ** 2, n["df"]) if n else None
    return compare(a[:1], b[:1], noise=noise).text()


def budget_samples(args) -> int:
    """nas-attn's full budget in samples (epochs x samples per epoch of the `default` space,
    `--epochs` if given): what every step-matched arm trains on, known before any arm runs."""
    from nas_attn.searching.space import full_budget
    from nas_attn.searching.space_files import load_space
    from nas_attn.training import TrainConfig

    b = full_budget(load_space("default"))
    per_epoch = b.get("samples_per_epoch", TrainConfig.model_fields["samples_per_epoch"].default)
    return (args.epochs or b["epochs"]) * per_epoch


def run_arm(args, arm, results, cfg, tr, va, raw, pre, conf) -> dict:
    base = results.get("arms", {}).get("nasattn_plain")
    if arm == "nasattn_plain":
        return run_nasattn(args, cfg, tr, va, test_images(args, raw), args.work / arm)
    samples = budget_samples(args)
    if base is not None and base["samples"] != samples:
        raise SystemExit(f"{args.work}: its nasattn_plain trained {base['samples']} samples, "
                         f"not {samples} (--epochs differs from that run's)")
    if arm == "nnunet":
        return run_nnunet(args, pre, raw, conf, "nnUNetPlans", arm, samples)
    if arm == "nnunet_time":
        return run_nnunet(args, pre, raw, conf, "nnUNetPlans", arm, samples,
                          cpu_s=base["cpu_s"])
    if arm == "nnunet_narrow":
        depth = 3
        name = narrow_plans(pre, conf, depth, [8 * 2 ** i for i in range(depth + 1)])
        return run_nnunet(args, pre, raw, conf, name, arm, samples)
    from nas_attn.nnunet import write_plans

    if arm == "nasattn_winner":
        return winner_runs(args, raw, tr.classes)
    if arm == "nnunet_winner":
        arch = winner_arch(args.winner)
        write_plans(pre / "nnUNetPlans.json", arch, conf, plans_name="nasAttnWinnerPlans",
                    force=True)
        return {**run_nnunet(args, pre, raw, conf, "nasAttnWinnerPlans", arm, samples),
                "arch": arch.summary()}
    if arm == "nasattn_searched":
        return run_nasattn(args, cfg, tr, va, test_images(args, raw), args.work / arm,
                           arch=nasattn_arch(args, arm, tr))
    arch = placement(args, tr)
    write_plans(pre / "nnUNetPlans.json", arch, conf, force=True)
    return {**run_nnunet(args, pre, raw, conf, "nasAttnPlans", arm, samples),
            "arch": arch.summary()}


def report(results: dict) -> None:
    arms = results.get("arms", {})
    print(f"\n{results['data']} ({results['configuration']}), {results['date']}, "
          f"commit {results['commit']}, {results['machine']}")
    print(f"{'arm':<16} {'steps':>6} {'batch':>5} {'samples':>7} {'CPU s':>7} "
          f"{'pooled Dice [95 % CI]':>26} {'nnU-Net mean':>12} {'agree':>5}  vs nas-attn plain")
    for name, r in arms.items():
        t = r["test"]
        ci = t["ci"]
        vs = r.get("vs_plain", "")
        print(f"{name:<16} {r['steps']:>6} {r['batch']:>5} {r['samples']:>7} "
              f"{r['cpu_s'] if r['cpu_s'] is not None else '—':>7} {t['pooled_dice']:>8.4f} "
              f"[{max(0, ci['low']):.4f}, "
              f"{min(1, ci['high']):.4f}] {t['nnunet_mean_dice']:>12.4f} "
              f"{'yes' if t['agree'] else 'NO':>5}  {vs}"
              + (f"; vs nnU-Net: {r['vs_nnunet']}" if r.get("vs_nnunet") else ""))


if __name__ == "__main__":
    main()
