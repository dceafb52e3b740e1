"""`nas-attn export` (a study trial or a `train` output) and `nas-attn dashboard`."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..errors import NasAttnError
from .fmt import escape


def export_cli(study_name, trial_number, out: Path | None, formats: tuple[str, ...],
               storage, runs_dir: Path, console: Console, force: bool = False) -> None:
    from ..searching import export_trial, load_study, open_existing_storage

    study = load_study(study_name, open_existing_storage(storage, runs_dir))
    written, trial = export_trial(study, trial_number, out, formats=formats, runs_dir=runs_dir,
                                  force=force)
    what = f"trial {trial.number}" if trial is not None else \
        "the recommended plain UNet"
    table = Table(title=f"exported {what} of study {escape(repr(study.study_name))}")
    table.add_column("file")
    table.add_column("size", justify="right")
    for kind, path in written.items():
        table.add_row(escape(str(path)), f"{Path(path).stat().st_size / 1024:.1f} KiB")
    console.print(table)
    if trial is None:
        console.print((study.user_attrs.get("finalize") or {}).get("recommended", {})
                      .get("summary", ""), markup=False)
        return
    console.print(trial.user_attrs.get("arch_summary", ""), markup=False)
    if "weights" in written and not trial.user_attrs.get("checkpoint") \
            and trial.state.name != "COMPLETE":
        console.print(f"[yellow]note:[/yellow] trial {trial.number} is "
                      f"{trial.state.name.lower()}: its weights are those of its best epoch "
                      "before it stopped (best.pt on disk)")
    if "weights" not in written:
        console.print("[yellow]note:[/yellow] this trial kept no checkpoint; model.py builds the "
                      "architecture with fresh weights (retrain it with `nas-attn train "
                      f"--from-study {escape(study.study_name)} --trial {trial.number}`)")


NO_MIRRORING = "nnUNetTrainerNoMirroring"
MAX_LATERAL_CASES = 50


def lateral_note(plans_file: str | Path) -> str | None:
    """Why nnU-Net's default mirroring would change what a label means on this dataset, or None.

    nnU-Net's trainer mirrors every spatial axis (and its predictor averages mirrored copies);
    a class that lies on one side of the image along an axis (a left or right structure) then
    sees mirrored copies labelled with the wrong side. The reference segmentations nnU-Net keeps
    beside its plans (`gt_segmentations/`, at most MAX_LATERAL_CASES of them) are checked as
    nas-attn checks its own training data (`data.augment.lateral_classes`)."""
    import numpy as np

    from ..data.augment import lateral_classes
    from ..data.readers import read_array, split_name

    folder = Path(plans_file).parent / "gt_segmentations"
    files = sorted(f for f in folder.glob("*") if f.is_file() and split_name(f.name))
    if not files:
        return None
    masks = []
    for f in files[:MAX_LATERAL_CASES]:
        try:
            masks.append(np.asarray(read_array(f, "mask")).astype(np.int64))
        except (OSError, ValueError, NasAttnError):  # unreadable: nnU-Net's training will say
            continue
    if not masks:
        return None
    classes = int(max(m.max() for m in masks)) + 1
    found = lateral_classes(masks, classes)
    if not found:
        return None
    ids = sorted({c for cs in found.values() for c in cs})
    shown = ", ".join(map(str, ids[:8])) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    axes = sorted(found)
    along = (f"axis {axes[0]}" if len(axes) == 1 else
             f"axes {', '.join(map(str, axes[:-1]))} and {axes[-1]}")
    return (f"class{'es' if len(ids) > 1 else ''} {shown} lie{'' if len(ids) > 1 else 's'} on "
            f"one side of the image along {along} in "
            f"{folder}: nnU-Net's default trainer mirrors every axis, which would teach a "
            f"mirrored structure the other side's label; train with `-tr {NO_MIRRORING}`")


def export_nnunet_cli(study_name, trial_number, plans: Path | None, configuration: str,
                      plans_name: str, storage, runs_dir: Path, console: Console,
                      force: bool = False) -> None:
    """The chosen architecture (the one `export` would write) as nnU-Net v2 plans."""
    from ..device import available_devices
    from ..nnunet import write_plans
    from ..searching import chosen_arch, load_study, open_existing_storage

    if plans is None:
        raise NasAttnError("--format nnunet needs --nnunet-plans: the nnUNetPlans.json of the "
                           "dataset, written by `nnUNetv2_plan_and_preprocess -d ID -c CONFIG`")
    study = load_study(study_name, open_existing_storage(storage, runs_dir))
    arch, what = chosen_arch(study, trial_number)
    dest = write_plans(plans, arch, configuration, plans_name=plans_name, force=force)
    dataset = dest.parent.name
    console.print(f"wrote {escape(str(dest))}: nnU-Net's plans with the {configuration} "
                  f"architecture replaced by {escape(what)} ({escape(arch.summary())})",
                  highlight=False)
    note = lateral_note(dest)
    if note:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    trainer = f" -tr {NO_MIRRORING}" if note else ""
    # nnUNetv2_train trains on CUDA unless told otherwise
    device = "" if any(d.startswith("cuda") for d in available_devices()) else " -device cpu"
    console.print(f"train it with nnU-Net (nas-attn installed in the same environment): "
                  f"`nnUNetv2_train {escape(dataset)} {configuration} 0 -p {plans_name}"
                  f"{trainer}{device}`", highlight=False)


def export_checkpoint_cli(checkpoint: Path, out: Path | None, formats: tuple[str, ...],
                          runs_dir: Path, console: Console, force: bool = False) -> None:
    from ..exporting import export_checkpoint

    written, arch = export_checkpoint(checkpoint, out, formats=formats, runs_dir=runs_dir,
                                      force=force)
    table = Table(title=f"exported {escape(str(checkpoint))}")
    table.add_column("file")
    table.add_column("size", justify="right")
    for path in written.values():
        table.add_row(escape(str(path)), f"{Path(path).stat().st_size / 1024:.1f} KiB")
    console.print(table)
    console.print(arch.summary(), markup=False)


def dashboard_cli(storage, runs_dir: Path, host: str, port: int, console: Console) -> None:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from ..searching import artifact_dir_for, open_existing_storage, study_names

    st = open_existing_storage(storage, runs_dir)
    names = study_names(st)
    if not names:
        raise NasAttnError(f"no studies in {storage or runs_dir}; run `nas-attn search` first")
    _check_bind(host, port)
    art = artifact_dir_for(runs_dir)
    art.mkdir(parents=True, exist_ok=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] serving on {escape(host)}: anyone who can reach this "
                      "address can read and edit the studies")
    console.print(f"optuna-dashboard on http://{escape(host)}:{port}/ ({len(names)} studies: "
                  f"{escape(', '.join(names))}; artifacts in {escape(str(art))}). Ctrl-C stops it.")
    # the server runs in a thread of its own: Ctrl-C always lands in this (main) thread and
    # stops it. In the main thread, a Ctrl-C that arrived while a request was handled was
    # caught by wsgiref's error handler (a traceback, and the server kept running)
    import threading

    failed: list[BaseException] = []

    def serve() -> None:
        try:
            run_server(st, host=host, port=port, artifact_store=FileSystemArtifactStore(str(art)))
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            failed.append(e)

    server = threading.Thread(target=serve, name="optuna-dashboard", daemon=True)
    server.start()
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:  # how a dashboard is stopped: not an error
        from ..interrupts import acknowledge

        acknowledge(said=True)
        console.print("dashboard stopped")
        return
    if failed:
        raise NasAttnError(f"the dashboard stopped: {type(failed[0]).__name__}: {failed[0]}")


def _check_bind(host: str, port: int) -> None:
    """Fail with one line before starting the server when the address cannot be served."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise NasAttnError(f"--host {host!r} is not an address this machine can serve on "
                           f"({e}); use 127.0.0.1 or a local interface address") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(addr)
        except OSError as e:
            import errno

            if e.errno in (errno.EACCES, errno.EPERM):
                why = ("ports below 1024 need administrator rights; choose --port 1024 or "
                       "above, e.g. 8080" if port < 1024 else "choose another --port")
            elif e.errno == errno.EADDRINUSE:
                why = "another program is using the port; choose another --port"
            elif e.errno == errno.EADDRNOTAVAIL:
                why = "not an address of this machine; use 127.0.0.1 or a local interface"
            else:
                why = "choose another --host or --port"
            raise NasAttnError(f"cannot serve on {host}:{port}: {e.strerror or e} "
                               f"({why})") from None
