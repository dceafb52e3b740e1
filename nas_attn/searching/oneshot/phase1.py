"""Phase 1 of a one-shot search: train each supernet once, with the project's recipe.

The supernet goes through `nas_attn.training.train` like any candidate (loss, augmentation,
schedule, AMP and channels_last on CUDA, loader workers, `resume.pt` after every epoch), with a
new path each step (fair per-site schedule, `SuperNet.fair_path`) after a warm-up on the plain
path (`search.oneshot.warmup` of the steps). The budget is twice the
full budget `finalize` retrains with (`search.oneshot.budget_factor`), unless
`search.oneshot.epochs` says otherwise. The result is
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

from ...architecture.description import UNetArch
from ...errors import StudyError
from .supernet import SuperNet, macro_key

SUPERNET_FILE = "supernet.pt"
FORMAT_VERSION = 1


def supernet_tag(unit) -> str:
    """A short folder name for one supernet (a `choices.Unit`): depth, widths, a hash of the
    whole macro, and for a few-shot sub-supernet its group on the split site."""
    macro = unit.macro
    digest = hashlib.sha1(macro_key(macro).encode()).hexdigest()[:8]
    tag = f"d{macro.depth}_w{macro.widths[0]}_{macro.upsample}_{digest}"
    if unit.split_site is not None:
        tag += f"_split{unit.group}"
    return tag


def supernet_config(objective, overrides: dict[str, Any]):
    """The supernet's TrainConfig: the trial recipe for `oneshot.budget_factor` full budgets
    (or the space's `oneshot.epochs` / `samples_per_epoch`), no time limit, one evaluation at
    the end."""
    from ..space import full_budget

    space = objective.space
    one = space.search.oneshot
    budget = full_budget(space)
    epochs = one.epochs or max(1, round(one.budget_factor * budget["epochs"]))
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
    info: Any               # nas_attn.training.StepInfo


def ensure_supernets(objective, progress: Callable[[SupernetStep], None] | None = None
                     ) -> list[dict[str, Any]]:
    """Train every supernet of the objective's space that is not trained yet (resuming a
    killed training); a few-shot split first trains the shared supernet, then fine-tunes each
    sub-supernet from it. Returns one record per supernet phase 2 scores on (macro, file,
    parameters, seconds, and for a split its site, group and the shared supernet's cost)."""
    units = objective.units()
    out = []

    def callback(i, unit):
        if progress is None:
            return None
        return lambda info: progress(SupernetStep(i, len(units), unit.describe(), info))

    for i, unit in enumerate(units, 1):
        folder = objective.supernet_dir(unit)
        base_meta = None
        if unit.split_site is not None:
            base = objective.base_unit(unit)
            base_folder = objective.supernet_dir(base)
            if not (base_folder / SUPERNET_FILE).exists():
                train_supernet(objective, base, base_folder, callback(i, base))
            base_meta = read_meta(base_folder)
        if not (folder / SUPERNET_FILE).exists():
            train_supernet(objective, unit, folder, callback(i, unit),
                           start=None if base_meta is None else (base, base_folder))
        meta = read_meta(folder)
        record = {"macro": unit.describe(), "file": str(folder / SUPERNET_FILE), **meta}
        if base_meta is not None:
            record["shared"] = {"file": str(base_folder / SUPERNET_FILE), **base_meta}
        out.append(record)
    return out


def start_sampling(net: SuperNet, objective, cfg, warmup: bool = True) -> None:
    """Turn on `net`'s path sampling for a training with `cfg`, the first
    `search.oneshot.warmup` of its steps on the plain path (`warmup=False`: none)."""
    net.sampling = True
    net.warmup_steps = 0
    if warmup:
        spe = cfg.resolved_steps_per_epoch(len(objective.train_data))
        net.warmup_steps = round(objective.space.search.oneshot.warmup * cfg.epochs * spe)


def train_supernet(objective, unit, folder: Path, progress=None, start=None) -> Path:
    """Train `unit`'s supernet into `folder`; from scratch, or (few-shot split) starting from
    the trained shared supernet `start` = (its unit, its folder) and fine-tuned for
    `split_epochs`."""
    from ...training import train
    from ...training.checkpoint import atomic_torch_save, state_dict_cpu

    macro, choices = unit.macro, unit.choices
    cfg = supernet_config(objective, objective.overrides)
    seed = cfg.seed
    if start is not None:
        one = objective.space.search.oneshot
        epochs = one.split_epochs or max(1, cfg.epochs // 4)
        cfg = cfg.model_copy(update={"epochs": epochs, "val_every": epochs,
                                     "warmup_epochs": min(cfg.warmup_epochs, epochs / 4)})
        seed = cfg.seed + 1000 * (unit.group + 1)  # its own path order
    from ...device import Runtime

    # the macro's plain UNet is a lower bound of every path: refused before the supernet exists
    Runtime.create(objective.device, amp=cfg.amp, spatial_dims=macro.spatial_dims) \
        .check_fits(macro, objective.patch, cfg.batch_size)
    torch.manual_seed(seed)  # the initial weights are the seed's, as a trial's are
    net = SuperNet(macro, choices, seed=seed)
    resume = folder / "resume.pt"
    if start is not None and not resume.exists():
        net.inherit_from(load_supernet(start[1], start[0]))
    start_sampling(net, objective, cfg, warmup=start is None)  # a sub-supernet: trained trunk
    folder.mkdir(parents=True, exist_ok=True)
    resumed_from = _resume_epoch(resume)
    result = train(macro, objective.train_data, objective.val_data, objective.data_cfg, cfg,
                   out_dir=folder, progress=progress, preview=False, model=net,
                   resume_from=resume if resume.exists() else None, keep_resume=True)
    net.sampling = False
    (folder / "best.pt").unlink(missing_ok=True)  # the trunk's state, not a loadable model
    counts = {s: len(c) for s, c in choices.items()}
    split = None
    if start is not None:
        split = {"site": unit.split_site, "group": unit.group,
                 "holds": [c.short() if c.name else "none" for c in choices[unit.split_site]],
                 "from": str(start[1] / SUPERNET_FILE)}
    meta = {"format_version": FORMAT_VERSION, "macro": macro.to_json(),
            "choices": {s: [c.to_dict() for c in specs] for s, specs in choices.items()},
            "params": net.parameter_count(), "choices_per_site": counts,
            "steps": result.steps, "warmup_steps": net.warmup_steps,
            "resumed_from_epoch": resumed_from,
            "seconds": round(result.seconds, 1), "split": split,
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
    out = {k: m[k] for k in ("params", "steps", "seconds", "choices_per_site", "peak_gpu_mb")}
    out["warmup_steps"] = m.get("warmup_steps", 0)  # absent in supernets of version 0.2
    out["resumed_from_epoch"] = m.get("resumed_from_epoch")
    if m.get("split"):
        out["split"] = {k: m["split"][k] for k in ("site", "group", "holds")}
    return out


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


def load_supernet(folder: Path, unit) -> SuperNet:
    """The trained supernet in `folder`, checked against the macro and choices `unit` holds."""
    obj = _read(folder)
    meta = obj["meta"]
    want = {s: [c.to_dict() for c in specs] for s, specs in unit.choices.items()}
    if UNetArch.from_json(meta["macro"]) != unit.macro or meta["choices"] != want:
        raise StudyError(f"{Path(folder) / SUPERNET_FILE}: trained for another macro or other "
                         "site choices than the study's space; delete it to train it again")
    net = SuperNet(unit.macro, unit.choices)
    net.load_state_dict(obj["state"])
    return net.eval()
