"""Planning the worker processes of a search: one slot per worker, GPU workers pinned with
CUDA_VISIBLE_DEVICES, CPU workers with an equal share of the cores."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import StudyError


@dataclass
class Slot:
    index: int
    device: str | None
    """Passed to the worker's --device (None: the search's own choice)."""
    where: str
    """What the live view shows: `cuda:3` or `cpu (4 threads)`."""
    env: dict[str, str]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(n: int) -> int:
    """An equal share of the cores, at most OMP_NUM_THREADS when the user set it."""
    share = max(1, cpu_cores() // n)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(cap)) if cap.isdigit() and int(cap) > 0 else share


def parse_gpus(gpus: str) -> list[str]:
    """`0,1,3` or `all` -> device ids as strings."""
    text = gpus.strip().lower()
    if text == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise StudyError("--gpus all: no CUDA device is visible on this machine")
        return [str(i) for i in range(n)]
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids or not all(p.isdigit() for p in ids):
        raise StudyError(f"--gpus {gpus!r} is not accepted; give device numbers like 0,1,2,3 "
                         f"or `all`")
    if len(set(ids)) != len(ids):
        raise StudyError(f"--gpus {gpus!r} lists a device twice; use --per-gpu K for several "
                         f"workers on one GPU")
    return ids


def check_gpus(ids: list[str]) -> None:
    """Every listed GPU exists on this machine."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in ids if int(i) >= n]
    if missing:
        raise StudyError(f"--gpus {','.join(ids)}: no CUDA device {', '.join(missing)} on this "
                         f"machine ({n} visible); use --workers N for CPU workers")


def plan_slots(workers: int | None, gpus: str | None, per_gpu: int = 1,
               device: str | None = None, check: bool = True) -> list[Slot]:
    """One slot per worker process: GPU workers pinned with CUDA_VISIBLE_DEVICES, CPU workers
    with an equal share of the cores (torch threads and OMP/MKL threads)."""
    if per_gpu < 1:
        raise StudyError(f"--per-gpu {per_gpu} is not accepted; give 1 or more")
    if gpus is not None:
        if workers is not None:
            raise StudyError("give either --workers N (CPU or one device) or --gpus LIST "
                             "(one worker per GPU, times --per-gpu), not both")
        ids = parse_gpus(gpus)
        if check:
            check_gpus(ids)
        n = len(ids) * per_gpu
        threads = threads_per_worker(n)
        return [Slot(i, "cuda:0", f"cuda:{gid}", _env(threads, gid))
                for i, gid in enumerate(g for g in ids for _ in range(per_gpu))]
    n = workers or 1
    if n < 1:
        raise StudyError(f"--workers {workers} is not accepted; give 1 or more")
    threads = threads_per_worker(n)
    where = device or "auto"
    return [Slot(i, device, f"{where} ({threads} thread{'s' * (threads > 1)})", _env(threads))
            for i in range(n)]


def _env(threads: int, gpu: str | None = None) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "NAS_ATTN_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env
