"""`export_trial`: a trial of a study exported like any architecture (`nas_attn.export`), with
the full-budget weights and scores when `finalize` retrained it."""
from __future__ import annotations

from pathlib import Path

from ..errors import NasAttnError
from ..export import export_arch
from ..export_text import sanitize_text
from .report import get_trial, trial_arch


def export_trial(study, number: int | None = None, out_dir: Path | None = None, *,
                 formats: tuple[str, ...] = (), runs_dir: Path = Path("runs"),
                 force: bool = False):
    """Export one trial of a study (the best when `number` is None): model.py, arch.json, the
    weights when the trial kept a checkpoint. Returns (paths written, the frozen trial)."""
    final = study.user_attrs.get("finalize") or {}
    if number is None and final.get("winner") is not None:
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
    ckpt = ua.get("checkpoint")
    row = next((r for r in final.get("candidates", []) if r.get("trial") == trial.number), None)
    if row is not None:  # retrained with the full budget: export those weights and scores
        meta["score_dice"] = row["val_mean"]
        meta["score_test_dice"] = row.get("test_mean")
        best = max(range(len(row["val"])), key=lambda i: row["val"][i])
        ckpt = row["checkpoints"][best] or ckpt
    weights = Path(ckpt) if ckpt and Path(ckpt).exists() else None
    out = Path(out_dir) if out_dir else Path(runs_dir) / "export" / \
        f"{sanitize_text(study.study_name, 48).replace(' ', '_')}_trial{trial.number}"
    inference = None
    if weights is not None:  # the patch size the weights were trained at
        from ..train.checkpoint import checkpoint_inference, read_checkpoint

        try:
            obj = read_checkpoint(weights)
            patch, overlap, _ = checkpoint_inference(weights, arch, dict(obj.get("meta") or {}))
            inference = {"patch_size": patch, "overlap": overlap}
        except NasAttnError:
            inference = None
    return export_arch(arch, out, weights=weights, meta=meta, formats=formats,
                       inference=inference, force=force), trial


