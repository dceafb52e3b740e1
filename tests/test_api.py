"""The public API: `import nas_attn as na`, light to import; the library calls the CLI runs."""
from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

import nas_attn as na

PUBLIC = ["AttnSpec", "BlockSpec", "NasAttnError", "UNetArch", "__version__", "build_unet",
          "create_attention", "evaluate", "export", "finalize", "list_attention", "load_model",
          "load_space", "noise", "predict", "register", "search", "train"]


def test_public_names_resolve():
    assert sorted(na.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(na, name) is not None
    for fn in ("search", "finalize", "noise", "train", "export", "load_model", "predict",
               "evaluate", "build_unet", "create_attention"):
        assert callable(getattr(na, fn)), fn
    with pytest.raises(AttributeError, match="public names are"):
        na.no_such_thing  # noqa: B018
    assert na.list_attention("dual") == ["channel_self", "dual", "position"]
    assert "gc" in na.list_attention() and "se" in na.list_attention("channel")


def test_import_loads_nothing_heavy():
    code = ("import sys, nas_attn; print(sorted(m for m in ('torch', 'optuna', 'timm', "
            "'albumentations', 'rich', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_verbs_are_plain_functions_with_explicit_signatures():
    """`na.search`, `na.train`, ... are functions (not callable modules) whose signature and
    help name every option: no `**kwargs` pass-through, a docstring each, and importing every
    subpackage does not shadow them (no module carries a public function's name)."""
    import inspect
    import pkgutil

    import nas_attn
    import nas_attn.inference.evaluation  # noqa: F401  the nouns beside the verbs
    import nas_attn.exporting  # noqa: F401
    import nas_attn.inference.prediction  # noqa: F401
    import nas_attn.searching.run  # noqa: F401
    import nas_attn.training  # noqa: F401

    verbs = ("search", "finalize", "noise", "train", "export", "load_model", "predict",
             "evaluate")
    for name in verbs:
        fn = getattr(na, name)
        assert inspect.isfunction(fn) and fn.__module__ == "nas_attn.api", name
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name
        assert inspect.Parameter.VAR_POSITIONAL not in kinds, name
        assert len(inspect.getdoc(fn) or "") > 80, name
    modules = {m.name.rsplit(".", 1)[-1] for m in pkgutil.walk_packages(
        nas_attn.__path__, "nas_attn.", onerror=lambda _: None) if m.name.count(".") == 1}
    assert not modules & set(nas_attn.__all__), modules & set(nas_attn.__all__)
    assert "trials" in inspect.signature(na.search).parameters
    with pytest.raises(TypeError, match="trails"):
        na.search("smoke", trails=3)


def test_open_search_leaves_the_request_alone(tmp_path, session, write_space, tiny_space):
    from nas_attn.searching.opening import SearchRequest, open_search

    session(data="builtin")  # study "t" remembers --data builtin
    req = SearchRequest(space=write_space(tiny_space), runs_dir=tmp_path / "runs", study="t")
    resumed = open_search(req)
    assert req.data is None and req.notes == []
    assert resumed.request.data == "builtin" and resumed.request is not req


def test_trials_record_their_resolved_configs_and_retraining_replays_them(session, tmp_path,
                                                                         tiny_space):
    """A one-element list in a space's training section is recorded with the trial (the
    sampler never sees it) and `train --from-study` runs exactly the trial's configuration,
    with the full budget instead of the trial's."""
    from nas_attn.searching.finalize import retrain_recipe
    from nas_attn.searching.space import full_budget
    from nas_attn.searching.run import run_search

    text = tiny_space.replace("training: {batch_size: 4, lr: 0.005}",
                              "training: {batch_size: [4], lr: [0.004], ce_weight: 0.5}")
    s = session(text)
    run_search(s, 1, None)
    trial = s.study.trials[0]
    cfg = trial.user_attrs["train_config"]
    assert (cfg["lr"], cfg["batch_size"], cfg["ce_weight"]) == (0.004, 4, 0.5)
    assert "train.lr" not in trial.params  # one choice: nothing sampled, still recorded
    assert trial.user_attrs["data_config"]["builtin_n"] == 6
    recipe = retrain_recipe(s.study, trial.number)
    want = {k: v for k, v in cfg.items() if k != "device"}
    want.update(max_time_s=None, **full_budget(s.space))
    assert recipe.train_options == want
    assert recipe.data_options == trial.user_attrs["data_config"]

    result = na.train(from_study=s.study, trial=trial.number, epochs=1,
                      out_dir=tmp_path / "re")
    ran = json.loads((tmp_path / "re" / "metrics.json").read_text())["train_config"]
    assert ran == {**cfg, "epochs": 1, "max_time_s": None, "device": None,
                   "samples_per_epoch": full_budget(s.space).get("samples_per_epoch")}
    assert result.arch.to_json() == trial.user_attrs["arch"]


def test_retraining_a_trial_of_an_older_study(session):
    """Trials that recorded no train_config: the sampled train.* values and the space's fixed
    training values, as before."""
    from nas_attn.searching.finalize import retrain_recipe

    s = session()
    arch = na.UNetArch(depth=1, widths=(4, 8))
    old = optuna.trial.create_trial(
        params={"train.lr": 0.002}, value=0.5, user_attrs={"arch": arch.to_json()},
        distributions={"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2)})
    recipe = retrain_recipe(s.study, old, s.space)
    assert recipe.train_options["lr"] == 0.002 and recipe.train_options["batch_size"] == 4
    assert recipe.arch == arch and recipe.data_options["builtin_n"] == 6


def _readme_example() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example_uses_only_public_names():
    """The README's Python API example stays within `__all__`."""
    import ast

    used = {n.attr for n in ast.walk(ast.parse(_readme_example())) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "na"}
    assert {"search", "finalize", "train", "export", "load_model", "predict", "evaluate",
            "load_space"} <= used
    assert used <= set(na.__all__), used - set(na.__all__)


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, run as written (in a scratch folder): the exported
    model predicts what the trained one does on a validation image."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    from nas_attn.data.builtin import make_builtin

    full = make_builtin(2)  # the raw values of the built-in set (64 images of 64^2)
    for k in range(3):  # what a user brings: images to segment, a labelled folder
        np.save(_mkdir(tmp_path / "scans") / f"s{k}.npy", full.images[k][0])
        np.save(_mkdir(tmp_path / "labelled" / "images") / f"l{k}.npy", full.images[k][0])
        np.save(_mkdir(tmp_path / "labelled" / "masks") / f"l{k}.npy",
                full.masks[k].astype(np.uint8))
    scope: dict = {}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), scope)
    result, loaded = scope["result"], scope["loaded"]
    assert [o.error for o in scope["outcomes"]] == [None] * 3
    assert sorted(p.name for p in (tmp_path / "runs" / "masks").iterdir()) == \
        [f"s{k}.npy" for k in range(3)]
    assert 0.0 <= scope["scores"]["dice"] <= 1.0 and scope["scores"]["images"] == 3
    assert scope["final"]["winner"] is not None or scope["final"]["candidates"]
    assert scope["study"].user_attrs["finalize"]["top"] == 1
    # one shape: what training recorded is what the export folder gives back (class names
    # stay in meta.json, not in model.py)
    assert loaded.inference == result.inference
    assert loaded.inference.to_dict() == result.inference.to_dict()
    assert loaded.normalisation == result.inference.normalisation_settings()
    assert loaded.spacing is None and result.inference.spacing is None  # PNG-like, no mm
    assert scope["study"].best_trial is not None
    from nas_attn.data import DataConfig, load_data

    _, val = load_data(DataConfig(source="builtin"))
    x = torch.from_numpy(val.images[0])[None]
    with torch.no_grad():
        want = result.model.cpu()(x).argmax(1)[0].numpy()
    raw = full.images[full.index_of(val.names[:1])[0]]
    got = loaded.normalise(raw)
    np.testing.assert_allclose(got.cpu().numpy()[0], val.images[0], atol=1e-6)
    with torch.no_grad():
        pred = loaded.model(got).argmax(1)[0].cpu().numpy()
    np.testing.assert_array_equal(pred, want)
