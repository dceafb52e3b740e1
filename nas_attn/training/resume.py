"""A training's resume file: everything a killed run needs to go on from its last epoch
(model, optimizer, scaler, EMA, schedule position, best so far), written atomically."""
from __future__ import annotations

import torch

from ..errors import TrainingError
from .checkpoint import plain_values, atomic_torch_save, state_dict_cpu


def save_resume(path, epoch, global_step, since_best, best, best_state, history, elapsed,
                 model, optimizer, schedule, scaler, ema) -> None:
    atomic_torch_save({
        "epoch": epoch, "global_step": global_step, "since_best": since_best,
        "elapsed_s": float(elapsed), "warmup_end_s": schedule.warmup_end_s,
        "best": plain_values(best), "history": plain_values(history), "best_state": best_state,
        "model": state_dict_cpu(model), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "ema": None if ema is None else state_dict_cpu(ema),
    }, path)


def load_resume(path, model, optimizer, schedule, scaler, ema):
    """Restore the state `save_resume` wrote; returns where and how the run goes on."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
    except Exception as e:  # noqa: BLE001  (unreadable file or another architecture)
        raise TrainingError(f"cannot resume from {str(path)!r}: {e}") from None
    schedule.warmup_end_s = state["warmup_end_s"]
    schedule.update(state["global_step"], state["elapsed_s"])
    return (int(state["epoch"]) + 1, int(state["global_step"]), int(state["since_best"]),
            dict(state["best"]), state["best_state"], list(state["history"]),
            float(state["elapsed_s"]))
