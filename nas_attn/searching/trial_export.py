"""`export_trial`: a trial of a study exported like any architecture (`nas_attn.exporting`), with
the full-budget weights and scores when `finalize` retrained it."""
from __future__ import annotations

from pathlib import Path

from ..errors import NasAttnError
from ..exporting import export_arch
from ..paths import folder_name, inside
from .report import get_trial, trial_arch


def export_trial(study, number: int | None = None, out_dir: Path | None = None, *,
                 formats: tuple[str, ...] = (), runs_dir: Path = Path("runs"),
                 force: bool = False):
    """Export one trial of a study (default: the model `finalize` recommends, else the best
    trial): model.py, arch.json, the weights when the trial kept a checkpoint. Returns (paths
    written, the frozen trial); the trial is None when `finalize` recommended the plain UNet at
    a candidate's size, which no trial of the study is."""
    final = study.user_attrs.get("finalize") or {}
    rec = final.get("recommended")
    if number is None and rec is not None and rec.get("trial") is None:
        return _export_control(study, final, out_dir, formats, runs_dir, force), None
    if number is None and rec is not None:
        number = int(rec["trial"])  # chosen on validation, attention vs width decided
    elif number is None and final.get("winner") is not None:
        number = int(final["winner"])  # the full-budget winner, chosen on validation
    trial = get_trial(study, number)
    arch = trial_arch(trial)
    ua = trial.user_attrs
    meta = {
        "score_dice": trial.values[0] if trial.values else None,
        "score_metric": "validation Dice per class, pooled over the split",
        "params": ua.get("params"), "flops": ua.get("flops"),
        "latency_ms": ua.get("latency_ms"),
        "study": study.study_name, "trial": trial.number, "state": trial.state.name.lower(),
    }
    if isinstance(ua.get("dice_ci"), list) and None not in ua["dice_ci"]:
        meta["score_dice_ci95"] = {"low": round(ua["dice_ci"][0], 4),
                                   "high": round(ua["dice_ci"][1], 4)}
        meta["score_dice_ci95_counts"] = ua.get("dice_ci_noise", "cases only")
    if "inherited_dice" in ua:
        meta["score_metric"] = ("validation Dice per class, pooled over the split, with weights "
                                "inherited from the one-shot supernet")
    ckpt = ua.get("checkpoint") or _left_on_disk(runs_dir, study.study_name, trial.number)
    if ckpt and not ua.get("checkpoint"):  # a failed or interrupted trial's best epoch so far
        meta["weights_note"] = (f"the best epoch's checkpoint of trial {trial.number} "
                                f"({trial.state.name.lower()}), kept on disk")
    row = next((r for r in final.get("candidates", []) if r.get("trial") == trial.number), None)
    if row is not None:  # retrained with the full budget: export those weights and scores
        meta.update(_row_meta(row, final))
        rec = final.get("recommended") or {}
        best = max(range(len(row["val"])), key=lambda i: row["val"][i])
        ckpt = (rec.get("checkpoint") if rec.get("key") == row.get("key") else None) or \
            row["checkpoints"][best] or ckpt
    out = Path(out_dir) if out_dir else inside(Path(runs_dir) / "export",
                                               f"{folder_name(study.study_name)}_trial{trial.number}")
    return _export(arch, out, ckpt, meta, formats, force), trial


def chosen_arch(study, number: int | None = None):
    """(architecture, what it is) of the model `export_trial` would write: trial `number`, else
    the model `finalize` recommended, else the best trial."""
    final = study.user_attrs.get("finalize") or {}
    rec = final.get("recommended")
    if number is None and rec is not None:
        from ..architecture.description import UNetArch

        who = f"trial {rec['trial']}" if rec.get("trial") is not None else rec.get("label", "")
        return UNetArch.from_dict(rec["arch"]), f"finalize's recommended model ({who})"
    trial = get_trial(study, number)
    return trial_arch(trial), f"trial {trial.number} of study {study.study_name!r}"


def _left_on_disk(runs_dir: Path, study_name: str, number: int) -> str | None:
    """The best.pt a trial's training wrote, when the trial did not record it (it failed or
    was interrupted after an epoch); None when there is none or the stored name would lead
    outside the runs folder."""
    try:
        path = inside(Path(runs_dir), study_name, f"trial_{int(number):04d}", "best.pt")
    except NasAttnError:
        return None
    return str(path) if path.is_file() else None


def _row_meta(row, final) -> dict:
    """Scores of a retrained candidate (means with their 95 % intervals over cases and seeds),
    and the attention verdict of the finalize run with its interval."""
    meta = {"score_dice": row["val_mean"], "score_test_dice": row.get("test_mean"),
            "score_metric": "validation Dice per class, pooled over the split, full-budget "
                            f"retraining, mean of {len(row['val'])} seed(s)"}
    for key, ci in (("score_dice_ci95", row.get("val_ci")),
                    ("score_test_dice_ci95", row.get("test_ci"))):
        if ci and ci.get("low") is not None:
            meta[key] = {"low": round(ci["low"], 4), "high": round(ci["high"], 4)}
    if (row.get("val_ci") or {}).get("noise"):
        meta["score_dice_ci95_counts"] = f"cases and {row['val_ci']['noise']}"
    gain = final.get("attention_gain")
    if gain:
        meta["attention_verdict"] = gain["verdict"]
        for split in ("val", "test"):
            c = gain.get(split)
            if c:
                meta[f"gain_over_same_size_plain_{split}"] = {
                    "diff": round(c["diff"]["value"], 4),
                    "ci95_low": None if c["diff"]["low"] is None else round(c["diff"]["low"], 4),
                    "ci95_high": None if c["diff"]["high"] is None else
                    round(c["diff"]["high"], 4), "p": round(c["p"], 4), "verdict": c["verdict"]}
        if gain.get("on"):
            meta["attention_verdict_on"] = gain["on"]
    return meta


def _export_control(study, final, out_dir, formats, runs_dir, force):
    """A plain UNet at a candidate's size, recommended by `finalize` (no trial holds it)."""
    from ..architecture.description import UNetArch

    rec = final["recommended"]
    row = next(r for r in final["candidates"] if r["trial"] is None
               and r["summary"] == rec["summary"])
    meta = {"study": study.study_name, "trial": None, "candidate": rec["label"],
            **_row_meta(row, final)}
    out = Path(out_dir) if out_dir else inside(Path(runs_dir) / "export",
                                               f"{folder_name(study.study_name)}_plain")
    return _export(UNetArch.from_dict(rec["arch"]), out, rec["checkpoint"], meta, formats, force)


def _export(arch, out: Path, ckpt, meta, formats, force):
    weights = Path(ckpt) if ckpt and Path(ckpt).exists() else None
    inference = None
    if weights is not None:  # the patch size and normalisation the weights were trained with
        from ..inference.compat import checkpoint_inference
        from ..inference.checkpoint import read_checkpoint

        try:
            obj = read_checkpoint(weights)
            inference, _ = checkpoint_inference(weights, arch, dict(obj.get("meta") or {}))
        except NasAttnError:
            inference = None
    return export_arch(arch, out, weights=weights, meta=meta, formats=formats,
                       inference=inference, force=force)
