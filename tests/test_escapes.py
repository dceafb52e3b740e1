"""Terminal escapes in user-supplied names never reach the terminal: every command prints a
name with control characters made visible (`nas_attn.cli.fmt.escape`, `\\x1b`)."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import optuna
from PIL import Image

from nas_attn.architecture.description import UNetArch
from nas_attn.cli.fmt import escape

ESC = "\x1b[2J\x1b[31m"
"""Clear the screen, then red: what a hostile file or study name could do to a terminal."""


def clean(out: str) -> None:
    assert "\x1b" not in out, repr(out[:400])


def labelled(root, names):
    for name in names:
        m = np.zeros((16, 16), np.uint8)
        m[2:8, 2:8] = 1
        for sub, arr in (("images", m * 90 + 20), ("masks", m)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / sub / f"{name}.png")
    return root


def test_escape_makes_control_characters_visible_and_markup_inert():
    assert escape(f"a{ESC}b[bold]") == "a\\x1b[2J\\x1b[31mb\\[bold]"
    assert escape("line\nnext") == "line\nnext"


def test_show_a_stored_study_whose_name_holds_an_escape(tmp_path, cli):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'nas_attn.db'}")
    study = optuna.create_study(study_name=f"s{ESC}x", storage=storage, direction="maximize")
    arch = UNetArch(depth=1, widths=(4, 8))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={
        "arch": arch.to_json(), "arch_summary": arch.summary()}))
    code, out = cli("show", f"s{ESC}x", "--runs-dir", tmp_path)
    assert code == 0, out
    clean(out)
    assert "\\x1b" in out


def test_search_names_a_bad_file_with_its_escape_visible(tmp_path, cli):
    data = labelled(tmp_path / "d", ["a", "b", "c"])
    (data / "images" / f"bad{ESC}.png").write_bytes(b"not a png")
    (data / "masks" / f"bad{ESC}.png").write_bytes(b"not a png")
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent("""
        macro: {depth: [1], base_width: [4]}
        budget: {epochs: 1, samples_per_epoch: 4}
        search: {trials: 1, baselines: false}
        """))
    code, out = cli("search", "--space", space, "--data", data, "--runs-dir", tmp_path / "r")
    assert code != 0 and "bad\\x1b" in out, out
    clean(out)


def test_predict_and_evaluate_print_names_with_their_escapes_visible(tmp_path, cli):
    data = labelled(tmp_path / "d", ["a", "b", "c", f"e{ESC}"])
    arch = tmp_path / "arch.json"
    arch.write_text(UNetArch(depth=1, widths=(4, 8), classes=2).to_json())
    code, out = cli("train", "--arch", arch, "--data", data, "--epochs", "1", "--out",
                    tmp_path / "m")
    assert code == 0, out
    clean(out)
    code, out = cli("predict", data / "images", "--model", tmp_path / "m", "--out",
                    tmp_path / "p")
    assert code == 0, out
    clean(out)
    code, out = cli("evaluate", "--model", tmp_path / "m", "--data", data, "--json",
                    tmp_path / "e.json")
    assert code == 0, out
    clean(out)
    names = [r["name"] for r in json.loads((tmp_path / "e.json").read_text())["per_image"]]
    assert f"e{ESC}" in names  # the data itself keeps its name
