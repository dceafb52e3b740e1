"""The public API: `import nas_attn as na`, light to import; the library calls the CLI runs."""
from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

import nas_attn as na

PUBLIC = ["AttnSpec", "BlockSpec", "NasAttnError", "UNetArch", "__version__", "build_unet",
          "create_attention", "export", "list_attention", "load_model", "load_space",
          "register", "search", "train"]


def test_public_names_resolve():
    assert sorted(na.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(na, name) is not None
    for fn in ("search", "train", "export", "load_model", "build_unet", "create_attention"):
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


def test_submodules_stay_importable_beside_the_callables():
    import nas_attn.train as T
    from nas_attn.search.run import SearchRequest

    assert T is na.train and T.TrainConfig().epochs >= 1 and SearchRequest().space == "default"
    assert na.export.render_model_py  # the module, callable as na.export(...)


def test_open_search_leaves_the_request_alone(tmp_path, session, write_space, tiny_space):
    from nas_attn.search.run import SearchRequest, open_search

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
    from nas_attn.search.finalize import full_budget, retrain_recipe
    from nas_attn.search.run import run_search

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
    from nas_attn.search.finalize import retrain_recipe

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
    assert {"search", "train", "export", "load_model", "load_space"} <= used
    assert used <= set(na.__all__), used - set(na.__all__)


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, run as written (in a scratch folder): the exported
    model predicts what the trained one does on a validation image."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), scope)
    result, loaded = scope["result"], scope["loaded"]
    assert loaded.normalisation == {k: v for k, v in result.inference.items()
                                    if k not in ("patch_size", "overlap", "spacing")}
    assert loaded.spacing is None and result.inference["spacing"] is None  # PNG-like, no mm
    assert scope["study"].best_trial is not None
    from nas_attn.data import DataConfig, load_data

    _, val = load_data(DataConfig(source="builtin"))
    x = torch.from_numpy(val.images[0])[None]
    with torch.no_grad():
        want = result.model.cpu()(x).argmax(1)[0].numpy()
    from nas_attn.data.builtin import make_builtin

    full = make_builtin(2)  # the raw values of the built-in set (64 images of 64^2)
    raw = full.images[full.index_of(val.names[:1])[0]]
    got = loaded.normalise(raw)
    np.testing.assert_allclose(got.cpu().numpy()[0], val.images[0], atol=1e-6)
    with torch.no_grad():
        pred = loaded.model(got).argmax(1)[0].cpu().numpy()
    np.testing.assert_array_equal(pred, want)
