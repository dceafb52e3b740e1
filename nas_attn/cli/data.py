"""`nas-attn data check PATH`: print a dataset folder's summary and every problem."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..data import check_folder
from .fmt import escape
from ..data.readers import fmt_shape


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _class_label(k: int, names: list[str], classes: int) -> str:
    if k < len(names):
        return names[k]
    if k == 0:
        return "background"
    return "foreground" if classes == 2 else ""


def data_check(path: Path, console: Console) -> int:
    """Validate `path` (see `nas_attn.data.check`); 0 when usable, 1 when there are problems."""
    rep = check_folder(path)
    table = _report_table(rep)
    console.print(table)
    problems = list(rep.problems)
    if not problems:  # the same split rules as search and train: one verdict
        from ..data import DataConfig, load_data
        from ..errors import DataError

        try:
            load_data(DataConfig(source=str(path)))
        except DataError as e:
            problems.append(f"split: {e}")
    for note in rep.notes:
        console.print(f"[dim]note:[/dim] {escape(note)}", highlight=False)
    if problems:
        n = len(problems)
        console.print(f"[bold red]{n} problem{'s' if n != 1 else ''}:[/bold red]")
        for p in problems:
            console.print(f"  [red]-[/red] {escape(p)}", highlight=False)
        return 1
    for label, note in _training_notes(path):
        console.print(f"[dim]{label}:[/dim] {escape(note)}", highlight=False)
    console.print("[green]ok[/green]")
    return 0


def _report_table(rep) -> Table:
    """The folder report as the table `data check` prints."""
    table = Table(title=f"dataset {escape(rep.path)}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    files = f"{_count(rep.n_images, 'image')}, {_count(rep.n_masks, 'mask')}"
    if rep.n_aux:
        files += f", {rep.n_aux} aux"
    table.add_row("layout", {"folder": "images/ + masks/ (nas-attn)",
                             "nnunet": "nnU-Net v2 raw (dataset.json, imagesTr/, labelsTr/)",
                             "decathlon": "Medical Segmentation Decathlon (dataset.json "
                                          "training list)"}[rep.layout])
    table.add_row("files", files)
    table.add_row("usable samples", str(rep.n_samples))
    if rep.spatial_dims:
        table.add_row("spatial dims", f"{rep.spatial_dims}D")
    if rep.size_min:
        sizes = fmt_shape(rep.size_min)
        if rep.size_max != rep.size_min:
            sizes = f"{sizes} .. {fmt_shape(rep.size_max)}"
        table.add_row("sizes", sizes)
    if rep.spacing_min:
        sp = "×".join(f"{v:g}" for v in rep.spacing_min)
        if rep.spacing_max != rep.spacing_min:
            sp += " .. " + "×".join(f"{v:g}" for v in rep.spacing_max)
        table.add_row("spacing (mm)", sp)
    if rep.channels:
        chans = ", ".join(map(str, rep.channels))
        if rep.channel_names:
            chans += f" ({', '.join(escape(n) for n in rep.channel_names)})"
        table.add_row("channels", chans)
    if rep.aux_channels:
        table.add_row("aux channels", ", ".join(map(str, rep.aux_channels)))
    if rep.class_pixels:
        table.add_row("masks", rep.mask_kind)
        names = rep.class_names or []
        shares = "\n".join(
            f"{k} {_class_label(k, names, rep.classes)}".rstrip()
            + f": {v:.2%} of pixels"
            for k, v in rep.class_shares.items())
        table.add_row(f"classes ({rep.classes})", shares)
    if rep.splits:
        table.add_row("split", f"{escape(str(rep.split_source))}: " + ", ".join(
            f"{len(v)} {k}" for k, v in rep.splits.items()))
    else:
        table.add_row("split", "none in the folder (random by val_fraction unless val_pattern is set)")
    return table


def _training_notes(path: Path) -> list[tuple[str, str]]:
    """What the default settings do with the folder's training split: the intensity
    normalisation fitted on it, and what the augmentation leaves out to keep labels
    meaningful (lateralised classes: no flips / 90° turns along their axis)."""
    from ..data import DataConfig, load_data, symmetry_plan
    from ..errors import DataError

    try:
        cfg = DataConfig(source=str(path))
        train, _ = load_data(cfg)
    except (DataError, ValueError):
        return []
    norm = train.normalisation or {}
    if norm.get("normalisation") == "dataset":
        ranges = ", ".join(f"channel {c}: {lo:g} -> 0, {hi:g} -> 1" for c, (lo, hi)
                           in enumerate(zip(norm["low"], norm["high"])))
        text = (f"dataset (one range for every image, from the training images' "
                f"{norm['low_percentile']:g}th / {norm['high_percentile']:g}th percentiles): "
                f"{ranges}")
    elif norm.get("normalisation") == "image":
        text = (f"image (each image between its own {norm['low_percentile']:g}th and "
                f"{norm['high_percentile']:g}th percentiles)")
    else:
        text = f"{norm.get('normalisation')} (values as stored)"
    notes = [("intensity", text)]
    path0 = getattr(train.images[0], "path", None)  # read through the preprocessed cache
    if path0 is not None:
        notes.append(("cache", f"{path0.parent} (the decoded cases, read patch by patch by "
                               "train and search; --cache-dir chooses another place)"))
    aug = symmetry_plan(train, cfg).note
    return notes + ([("augmentation", aug)] if aug else [])
