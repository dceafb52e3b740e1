"""Phase 1 of a one-shot search: train each supernet once, with the project's recipe.

The supernet goes through `nas_attn.train.train` like any candidate (loss, augmentation,
schedule, AMP and channels_last on CUDA, loader workers, `resume.pt` after every epoch), with a
new path each step (fair per-site schedule, `SuperNet.fair_path`). The budget is the full
budget `finalize` retrains with, unless `search.oneshot.epochs` says otherwise. The result is
`runs/<study>/supernet/<tag>/supernet.pt` (written under a temporary name, then renamed); a
killed training resumes from its `resume.pt` when the search is run again.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...arch import UNetArch
from ...errors import StudyError
from .supernet import SuperNet, macro_key

SUPERNET_FILE = "supernet.pt"
FORMAT_VERSION = 1


def supernet_tag(macro: UNetArch) -> str:
    """A short folder name for one macro: depth, widths and a hash of the whole macro."""
    digest = hashlib.sha1(macro_key(macro).encode()).hexdigest()[:8]
    return f"d{macro.depth}_w{macro.widths[0]}_{macro.upsample}_{digest}"


def supernet_config(objective, overrides: dict[str, Any]):
    """The supernet's TrainConfig: the trial recipe with the full budget (or the space's
    `oneshot.epochs` / `samples_per_epoch`), no time limit, one evaluation at the end."""
    from ..finalize import full_budget

    space = objective.space
    one = space.search.oneshot
    budget = full_budget(space)
    epochs = one.epochs or budget["epochs"]
    opts = {**overrides, "max_time_s": None, "epochs": epochs, "val_every": epochs,
            "patience": None}
    spe = one.samples_per_epoch or budget.get("samples_per_epoch")
    if spe:
        opts["samples_per_epoch"] = spe
    return objective.train_config(opts)


@dataclass(frozen=True)
class SupernetStep:
    """What the phase-1 `progress` callback receives."""

    index: int              # 1-based supernet counter
    count: int
    macro: str
    info: Any               # nas_attn.train.StepInfo


def ensure_supernets(objective, progress: Callable[[SupernetStep], None] | None = None
                     ) -> list[dict[str, Any]]:
    """Train every supernet of the objective's space that is not trained yet (resuming a
    killed training); returns one record per supernet (macro, file, parameters, seconds)."""
    macros = objective.macros()
    out = []
    for i, macro in enumerate(macros, 1):
        folder = objective.supernet_dir(macro)
        if not (folder / SUPERNET_FILE).exists():
            cb = None if progress is None else \
                (lambda info, _i=i, _m=macro: progress(SupernetStep(_i, len(macros),
                                                                     _m.summary(), info)))
            train_supernet(objective, macro, folder, cb)
        meta = read_meta(folder)
        out.append({"macro": macro.summary(), "file": str(folder / SUPERNET_FILE), **meta})
    return out


def train_supernet(objective, macro: UNetArch, folder: Path, progress=None) -> Path:
    from ...train import train
    from ...train.checkpoint import atomic_torch_save, state_dict_cpu

    choices = objective.choices(macro)
    cfg = supernet_config(objective, objective.overrides)
    net = SuperNet(macro, choices, seed=cfg.seed)
    net.sampling = True
    folder.mkdir(parents=True, exist_ok=True)
    resume = folder / "resume.pt"
    resumed_from = _resume_epoch(resume)
    result = train(macro, objective.train_data, objective.val_data, objective.data_cfg, cfg,
                   out_dir=folder, progress=progress, preview=False, model=net,
                   resume_from=resume if resume.exists() else None)
    net.sampling = False
    (folder / "best.pt").unlink(missing_ok=True)  # the trunk's state, not a loadable model
    counts = {s: len(c) for s, c in choices.items()}
    meta = {"format_version": FORMAT_VERSION, "macro": macro.to_json(),
            "choices": {s: [c.to_dict() for c in specs] for s, specs in choices.items()},
            "params": net.parameter_count(), "choices_per_site": counts,
            "steps": result.steps, "resumed_from_epoch": resumed_from,
            "seconds": round(result.seconds, 1),
            "train_config": result.config, "peak_gpu_mb": result.runtime.peak_memory_mb()}
    atomic_torch_save({"meta": meta, "state": state_dict_cpu(result.model)},
                      folder / SUPERNET_FILE)
    return folder / SUPERNET_FILE


def _resume_epoch(path: Path) -> int | None:
    """The last finished epoch of a killed supernet training (None: none to resume)."""
    if not path.exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception as e:  # noqa: BLE001  (truncated, foreign)
        raise StudyError(f"{path}: cannot resume the supernet's training from it ({e}); "
                         "delete it to start phase 1 afresh") from None


def read_meta(folder: Path) -> dict[str, Any]:
    obj = _read(folder)
    m = obj["meta"]
    return {k: m[k] for k in ("params", "steps", "seconds", "choices_per_site", "peak_gpu_mb")}


def _read(folder: Path) -> dict[str, Any]:
    path = Path(folder) / SUPERNET_FILE
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StudyError(f"{path}: the supernet is not trained yet (a one-shot search trains "
                         "it before scoring placements: run `nas-attn search` on the study "
                         "without workers first)") from None
    except Exception as e:  # noqa: BLE001  (truncated or foreign file)
        raise StudyError(f"{path}: not a readable supernet ({e}); delete it to train it "
                         "again") from None
    if not isinstance(obj, dict) or obj.get("meta", {}).get("format_version") != FORMAT_VERSION:
        raise StudyError(f"{path}: not a supernet file of format {FORMAT_VERSION}; delete it "
                         "to train it again")
    return obj


def load_supernet(folder: Path, macro: UNetArch, choices) -> SuperNet:
    """The trained supernet in `folder`, checked against the macro and choices it must hold."""
    obj = _read(folder)
    meta = obj["meta"]
    want = {s: [c.to_dict() for c in specs] for s, specs in choices.items()}
    if UNetArch.from_json(meta["macro"]) != macro or meta["choices"] != want:
        raise StudyError(f"{Path(folder) / SUPERNET_FILE}: trained for another macro or other "
                         "site choices than the study's space; delete it to train it again")
    net = SuperNet(macro, choices)
    net.load_state_dict(obj["state"])
    return net.eval()
