"""Search spaces, sampling, and the search / show commands end to end on CPU."""

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from nas_attn.architecture.description import AttnSpec
from nas_attn.errors import DivergedError, SpaceError
from nas_attn.searching.run import run_search
from nas_attn.searching.sampling import DataInfo, baseline_params, sample_arch, site_param
from nas_attn.searching.space import SPACES_DIR
from nas_attn.searching.space_files import load_space, parse_space







# ---------------------------------------------------------------------------------------------
# spaces
def test_ready_spaces_are_valid_and_counted(cli):
    ready = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    assert {"default", "attention_unet", "channel_spatial", "dual_cross", "multi_objective",
            "smoke", "volumetric_3d"} <= set(ready)
    for name in ready:
        text = (SPACES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# "), f"{name}.yaml needs a header comment"
        load_space(name)
    code, out = cli("spaces")
    assert code == 0
    for name in ready:
        assert name in out
    # smoke: depth 2 -> 2 enc x 2 skip x 2 dec sites with 2 choices each, bottleneck 2 choices
    assert load_space("smoke").count_architectures() == 2 ** 7


def test_count_with_options_and_levels():
    s = parse_space({"macro": {"depth": [1, 2]}, "encoder": {"choices": ["none", "se"],
                     "levels": {1: ["none"]}}, "options": {"se": {"reduction": [4, 8, 16]}}})
    # depth 1: encoder.0 has 1 + 3 choices; depth 2: (1 + 3) * 1
    assert s.count_architectures() == 4 + 4
    s = parse_space({"encoder": {"choices": ["none", "self"]},
                     "options": {"self": {"heads": {"low": 1, "high": 4}}}})
    assert s.count_architectures() == 5 ** 4
    s = parse_space({"training": {"lr": {"low": 0.001, "high": 0.1, "log": True}}})
    assert s.count_architectures() == 1


@pytest.mark.parametrize("text, words", [
    ("encoder: {choices: [none, se\n", ["line", "not valid YAML"]),
    ("- just\n- a list\n", ["must be a YAML mapping"]),
    ("encoder: {choices: [none, sse]}", ["encoder.choices", "unknown attention 'sse'", "known: none"]),
    ("encoder: {choices: [none], levels: {1: [transformer]}}", ["encoder.levels.1", "'transformer'"]),
    ("decoder: {choices: [gate]}", ["decoder.choices", "'gate'", "only be listed under skip"]),
    ("options: {se: {ratio: [2, 4]}}", ["options.se.ratio", "accepted: reduction"]),
    ("options: {foo: {a: 1}}", ["options.foo", "unknown attention"]),
    ("encodr: {choices: [se]}", ["encodr", "Extra inputs are not permitted"]),
    ("macro: {depth: [9]}", ["macro.depth", "depth must be an integer 1..7"]),
    ("macro: {norm: [batch, foo]}", ["macro.norm", "'foo' unknown", "batch, instance, group"]),
    ("macro: {act: [relu6]}", ["macro.act", "'relu6' unknown", "leaky_relu"]),
    ("macro: {upsample: [pixelshuffle]}", ["macro.upsample", "transpose, interp"]),
    ("macro: {encoder: [resnet]}", ["macro.encoder", "'unet' or 'timm:<model name>'"]),
    ("macro: {convs: [0]}", ["macro.convs", "1..4"]),
    ("macro: {base_width: [0]}", ["macro.depth / base_width", "widths must be integers in 1..4096"]),
    ("options: {eca: {kernel_size: [3, 4]}}", ["options.eca.kernel_size", "value 4", "odd"]),
    ("options: {eca: {kernel_size: {low: 1, high: 5}}}", ["options.eca.kernel_size", "value 2"]),
    ("options: {scse: {combine: [add, mean]}}", ["options.scse.combine", "'mean'", "'add', 'max'"]),
    ("options: {se: {reduction: [4.5]}}", ["options.se.reduction", "type int"]),
    ("training: {lr: [0.01, -1]}", ["training.lr", "value -1", "greater than 0"]),
    ("spatial_dims: 3\nencoder: {choices: [none, gc]}", ["encoder.choices", "'gc'", "spatial_dims [2]"]),
    ("training: {lr: {low: 0.1, high: 0.01}}", ["training.lr", "low (0.1) must be <= high"]),
    ("training: {learning_rate: 0.1}", ["training.learning_rate", "accepted:", "lr"]),
    ("data: {sorce: builtin}", ["data:", "sorce"]),
    ("objectives: [dice, speed]", ["objectives", "speed"]),
    ("objectives: [params, dice]", ["first objective must be dice"]),
    ("search: {sampler: bayes}", ["search.sampler", "bayes"]),
])
def test_malformed_space_errors(write_space, tmp_path, cli, text, words):
    p = write_space(text, "bad.yaml")
    with pytest.raises(SpaceError) as e:
        load_space(p)
    msg = str(e.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, msg
    code, out = cli("spaces", "check", str(p))
    assert code == 2 and "error:" in out and "Traceback" not in out


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_every_ready_space_samples_200_buildable_architectures(name):
    """`spaces check` passing means every architecture the space can sample builds: 200 random
    trials of each ready space, each built (on the meta device: no weights are allocated)."""
    import torch

    from nas_attn.architecture.builder import build_unet

    space = load_space(name)
    dims = space.spatial_dims or 2
    data = DataInfo(spatial_dims=dims, in_channels=1, classes=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                directions=["maximize"] * len(space.objectives))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        arch = sample_arch(trial, space, data)
        with torch.device("meta"):
            model = build_unet(arch)
        assert sum(p.numel() for p in model.parameters()) > 0
        seen.add(arch.to_json())
        study.tell(trial, [0.0] * len(space.objectives))
    assert len(seen) > min(50, space.count_architectures() / 2)


def test_bottleneck_levels_are_sampled_with_their_own_parameter():
    space = parse_space({"macro": {"depth": [2, 3]}, "bottleneck": {
        "choices": [None], "levels": {3: ["self"]}}, "options": {"self": {"heads": [1, 2]}}})
    assert site_param(space, "bottleneck", 3) == "bottleneck.3"
    a3 = sample_arch(FixedTrial({"depth": 3, "bottleneck.3.self.heads": 2}), space, DataInfo())
    assert a3.bottleneck == AttnSpec.make("self", heads=2)
    assert sample_arch(FixedTrial({"depth": 2}), space, DataInfo()).bottleneck.name is None
    assert space.count_architectures() == 1 + 2
    plain = parse_space({"bottleneck": {"choices": [None, "se"]}})
    assert site_param(plain, "bottleneck", 4) == "bottleneck"  # stable name when it can be


def test_paths_and_errors_with_brackets_are_printed_not_parsed(tmp_path, cli, tiny_space):
    """Text from the user (paths, file contents, exception messages) never becomes rich markup."""
    odd = tmp_path / "a[" / "bold]x"  # the path reads .../a[/bold]x/...
    odd.mkdir(parents=True)
    good = odd / "[b]space.yaml"
    good.write_text(tiny_space)
    code, out = cli("spaces", "check", good)
    assert code == 0 and "[b]space.yaml" in " ".join(out.split()).replace(" ", ""), out
    bad = odd / "bad.yaml"
    bad.write_text("macro: {norm: ['[/]']}\n")
    code, out = cli("spaces", "check", bad)
    assert code == 2 and "'[/]' unknown" in out and "Traceback" not in out, out


def test_missing_space_file_is_clear():
    with pytest.raises(SpaceError, match="not found.*default"):
        load_space("no_such_space.yaml")


# ---------------------------------------------------------------------------------------------
# sampling
def test_fixed_trial_sampling_names_and_conditional_options():
    space = parse_space({
        "macro": {"depth": [2, 3], "base_width": [4, 8]},
        "encoder": {"choices": ["none", "se"]}, "skip": {"choices": ["none", "gate"]},
        "options": {"se": {"reduction": [2, 4]}, "gate": {"resample": ["coarse", "fine"]}},
        "training": {"lr": {"low": 0.001, "high": 0.01, "log": True}}})
    params = {"depth": 2, "base_width": 8, "encoder.0.attn": "se", "encoder.0.se.reduction": 2,
              "encoder.1.attn": "none", "bottleneck.attn": "none", "skip.0.attn": "none",
              "skip.1.attn": "gate", "skip.1.gate.resample": "fine", "decoder.0.attn": "none",
              "decoder.1.attn": "none", "train.lr": 0.002}
    trial = FixedTrial(params)
    arch = sample_arch(trial, space, DataInfo(2, 3, 4, 0))
    assert arch.widths == (8, 16, 32) and arch.in_channels == 3 and arch.classes == 4
    assert arch.encoder[0].opts == {"reduction": 2} and arch.encoder[1].name is None
    assert arch.skip[1].name == "gate" and arch.skip[1].opts == {"resample": "fine"}
    # options of an unchosen module are never asked for: FixedTrial raises on unknown names
    assert "encoder.1.se.reduction" not in trial.params


def test_baselines_from_space():
    space = load_space("default")
    base = dict(baseline_params(space))
    assert set(base) == {"plain_unet", "attention_unet"}
    assert all(v == "none" for k, v in base["plain_unet"].items() if k.endswith(".attn"))
    assert base["attention_unet"]["skip.0.attn"] == "gate"
    assert "encoder.0.attn" in base["attention_unet"]
    no_gate = parse_space({"skip": {"choices": ["none", "cross"]}})
    assert [n for n, _ in baseline_params(no_gate)] == ["plain_unet"]
    # searched training settings: the recipe's default where the space allows it, else the
    # middle of the range (geometric for log ranges) or the first choice
    from nas_attn.training import TrainConfig

    lr_default = TrainConfig.model_fields["lr"].default
    assert base["plain_unet"]["train.lr"] == lr_default
    narrow = dict(baseline_params(parse_space({"training": {
        "lr": {"low": 0.02, "high": 0.08, "log": True}, "batch_size": [8, 2],
        "dice_weight": [0.5, 1.0]}})))["plain_unet"]
    assert narrow["train.lr"] == pytest.approx(0.04)
    assert narrow["train.batch_size"] == 8 and narrow["train.dice_weight"] == 1.0


# ---------------------------------------------------------------------------------------------
# end to end through the CLI
def test_smoke_search_show_and_resume(tmp_path, cli):
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", "smoke", "--trials", "4", "--runs-dir",
                    str(runs), "--study", "s1")
    assert code == 0, out
    assert (runs / "nas_attn.db").exists()
    storage = f"sqlite:///{runs / 'nas_attn.db'}"
    study = optuna.load_study(study_name="s1", storage=storage)
    assert len(study.trials) == 4
    assert "4 trial(s) in this session" in out
    labels = [t.user_attrs.get("baseline") for t in study.trials[:2]]
    assert labels == ["plain_unet", "attention_unet"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done and all(0 <= t.values[0] <= 1 for t in done)
    t0 = study.trials[0]
    for key in ("arch", "arch_summary", "params", "flops", "latency_ms", "curve"):
        assert key in t0.user_attrs
    assert (runs / "s1" / "trial_0000").is_dir()

    code, out = cli("show", "s1", "--runs-dir", str(runs))
    assert code == 0, out
    assert "Leaderboard" in out or "Study s1" in out
    assert "best: trial" in out and "plain_unet" in out

    # the user's next steps: export the winner, retrain it with a longer budget
    code, out = cli("export", "s1", "--runs-dir", str(runs), "--out",
                    str(tmp_path / "exp"))
    assert code == 0, out
    best = max((t for t in done), key=lambda t: t.values[0])
    assert f"exported trial {best.number}" in out
    assert {p.name for p in (tmp_path / "exp").iterdir()} >= {"model.py", "arch.json",
                                                               "weights.pt"}
    code, out = cli("train", "--from-study", "s1", "--trial", "0", "--epochs", "1",
                    "--runs-dir", str(runs), "--out", str(tmp_path / "re"))
    assert code == 0, out
    assert (tmp_path / "re" / "best.pt").exists() and (tmp_path / "re" / "metrics.json").exists()
    # every completed trial has its preview, curve and (top 3) model.py as dashboard artifacts
    from optuna.artifacts import get_all_artifact_meta

    metas = get_all_artifact_meta(best, storage=study._storage)
    assert {m.filename for m in metas} == {"preview.png", "curve.png", "model.py"}

    code, out = cli("search", "--space", "smoke", "--trials", "2", "--runs-dir",
                    str(runs), "--study", "s1")
    assert code == 0, out
    assert "resumed with 4 trials" in out
    assert len(optuna.load_study(study_name="s1", storage=storage).trials) == 6


def test_show_unknown_study_is_clear(tiny_space, write_space, tmp_path, cli):
    runs = tmp_path / "runs"
    code, out = cli("show", "nope", "--runs-dir", str(runs))
    assert code == 2 and "no studies" in out
    cli("search", "--space", str(write_space(tiny_space)), "--trials", "1",
        "--runs-dir", str(runs), "--study", "real")
    code, out = cli("show", "nope", "--runs-dir", str(runs))
    assert code == 2 and "'nope' does not exist" in out and "real" in out


def test_resume_with_other_space_refused(tiny_space, write_space, tmp_path, cli):
    runs = tmp_path / "runs"
    p = write_space(tiny_space)
    assert cli("search", "--space", str(p), "--trials", "1", "--runs-dir", str(runs),
               "--study", "a")[0] == 0
    code, out = cli("search", "--space", "smoke", "--trials", "1", "--runs-dir",
                    str(runs), "--study", "a")
    assert code == 2 and "different search space" in out


def test_resumed_study_from_before_recorded_normalisation_keeps_per_image(tiny_space, session):
    s = session(tiny_space)
    run_search(s, 1, None)
    (t0,) = [t for t in s.study.trials if t.state.is_finished()]
    assert t0.user_attrs["data_config"]["normalisation"] == "auto" and s.objective.data_cfg \
        .normalisation == "auto"
    old = {k: v for k, v in t0.user_attrs["data_config"].items() if k != "normalisation"}
    # a trial pruned before training (a constraint) has no data_config: not a sign of age
    s.study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, params=t0.params, distributions=t0.distributions,
        user_attrs={"arch": t0.user_attrs["arch"], "prune_reason": "constraint: params"}))
    assert session(tiny_space).objective.data_cfg.normalisation == "auto"
    s.study.add_trial(optuna.trial.create_trial(  # a trial written by an older nas-attn
        value=0.5, params=t0.params, distributions=t0.distributions,
        user_attrs={**t0.user_attrs, "data_config": old, "config_key": "an older key"}))
    resumed = session(tiny_space)
    assert resumed.objective.data_cfg.normalisation == "image"
    assert any("before the intensity normalisation was recorded" in n for n in resumed.notes)
    run_search(resumed, 1, None)
    (new,) = [t for t in resumed.study.trials if t.number != t0.number and "dice" in
              t.user_attrs and t.user_attrs.get("config_key") != "an older key"]
    assert new.state.is_finished() and "duplicate_of" not in new.user_attrs
    assert new.user_attrs["data_config"]["normalisation"] == "image"


# ---------------------------------------------------------------------------------------------
# pruned, failed, interrupted, duplicate, multi-objective (library level)


def test_constraint_prunes_with_reason(tiny_space, session, tmp_path):
    s = session(tiny_space + "constraints: {max_params: 100}\n")
    run_search(s, 2, None)
    states = {t.state for t in s.study.trials}
    assert states == {TrialState.PRUNED}
    assert all("constraint: params" in t.user_attrs["prune_reason"] for t in s.study.trials)


def test_failed_and_interrupted_trials_recorded(tiny_space, session, tmp_path, monkeypatch):
    import nas_attn.training as train_mod

    def diverge(*a, **k):
        raise DivergedError("loss is nan at epoch 1 step 3")

    monkeypatch.setattr(train_mod, "train", diverge)
    s = session(tiny_space)
    run_search(s, 2, None)  # a failed trial does not stop the study
    assert [t.state for t in s.study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "diverged: loss is nan" in s.study.trials[0].user_attrs["fail_reason"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_search(s, 3, None)
    last = s.study.trials[-1]
    assert last.state == TrialState.FAIL and "Ctrl-C" in last.user_attrs["fail_reason"]
    assert all(t.state != TrialState.RUNNING for t in s.study.trials)


@pytest.mark.parametrize("call", ["create_new_trial", "set_trial_state_values"])
def test_a_signal_inside_the_storage_call_that_starts_a_trial_leaves_none_running(
        tiny_space, session, monkeypatch, call):
    """A CI run of the signal test left a trial RUNNING: SIGTERM landed inside the storage
    call that starts a trial (a new one, or a queued baseline set RUNNING), after the row was
    written and before the search had listed it. The signal now waits for that call."""
    import os
    import signal

    from nas_attn import interrupts
    from nas_attn.searching import optuna_adapter as OA

    s = session(tiny_space)
    run_search(s, 1, None)
    if call == "set_trial_state_values":
        s.study.enqueue_trial(s.study.trials[0].params)
    storage = OA.storage_of(s.study)
    real = getattr(storage, call)

    def cut(*a, **k):
        out = real(*a, **k)
        if call == "create_new_trial" or a[1] == TrialState.RUNNING:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this returns
        return out

    monkeypatch.setattr(storage, call, cut)
    previous = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_search(s, 3, None)
    finally:
        interrupts.uninstall(previous)
    trials = s.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states, states
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "SIGTERM" in failed[0].user_attrs["fail_reason"], states


@pytest.mark.parametrize("where", ["sampling", "recording"])
def test_an_interrupt_outside_the_objective_leaves_no_trial_running(tiny_space, session,
                                                                     monkeypatch, where):
    """A signal in `ask` (the trial exists, the sampler is still sampling) or after the
    objective returned (optuna recording the result) is outside the objective, which fails its
    own trial: the search fails it all the same, and ends as interrupted."""
    from nas_attn.searching import optuna_adapter as OA

    s = session(tiny_space)
    run_search(s, 1, None)
    if where == "sampling":
        def sample(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(s.study.sampler, "before_trial", sample)
    else:
        storage = OA.storage_of(s.study)
        real = storage.set_trial_state_values

        def cut(trial_id, state, *a, **k):
            if state == TrialState.COMPLETE:
                raise KeyboardInterrupt
            return real(trial_id, state, *a, **k)

        monkeypatch.setattr(storage, "set_trial_state_values", cut)
    with pytest.raises(KeyboardInterrupt):
        run_search(s, 3, None)
    trials = s.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "Ctrl-C" in trials[1].user_attrs["fail_reason"]


def test_same_architecture_not_trained_twice(tiny_space, session, tmp_path, monkeypatch):
    import nas_attn.training as train_mod

    calls = []
    real = train_mod.train

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train", counting)
    one = tiny_space.replace("[none, se]", "[none]").replace("[none, gate]", "[none]")
    s = session(one + "", sampler="random")
    run_search(s, 3, None)
    assert len(calls) == 1
    dups = [t for t in s.study.trials if "duplicate_of" in t.user_attrs]
    assert len(dups) == 2 and all(t.values == s.study.trials[0].values for t in dups)


def test_multi_objective_pareto_and_pruner_note(tiny_space, session, tmp_path):
    s = session(tiny_space + "objectives: [dice, params]\n", pruner="hyperband")
    assert any("cannot prune multi-objective" in n for n in s.notes)
    run_search(s, 3, None)
    front = s.study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    from nas_attn.searching.report import pareto_front

    assert pareto_front(s.study)


def test_bad_data_folder_fails_before_creating_a_study(tmp_path, cli):
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "b.png")
    runs = tmp_path / "runs"
    code, out = cli("search", "--space", "smoke", "--data", str(root), "--runs-dir",
                    str(runs), "--study", "x")
    assert code == 2 and "Traceback" not in out
    assert "images/a.png: no mask" in out and "masks/b.png: no image" in out
    code, out = cli("show", "x", "--runs-dir", str(runs))
    assert code == 2 and "no studies" in out


def test_leaderboard_keeps_brackets_of_summaries():
    """`bott[self]` is text, not rich markup: the table must show it as written."""
    from rich.console import Console

    from nas_attn.cli.search import leaderboard_table

    study = optuna.create_study(direction="maximize")
    summary = "2D d1 w4-8 batch/relux2 transpose | bott[self] skip[0:gate]"
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"arch_summary": summary}))
    console = Console(width=200, record=True)
    console.print(leaderboard_table(study, 5))
    assert summary in console.export_text()


def test_leaderboard_on_a_narrow_console_lists_architectures_below_the_table():
    """At 80 columns the architecture column got 6 characters and each summary wrapped over 30
    lines: there, each trial's summary and note get a line of their own under the table."""
    from rich.console import Console

    from nas_attn.cli.search import WIDE_LEADERBOARD, leaderboard_table

    study = optuna.create_study(direction="maximize")
    summary = "2D d3 w8-16-32-64 batch/relux2 transpose | enc[0:cbam(kernel_size=7)] bott[self]"
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"arch_summary": summary}))
    study.add_trial(optuna.trial.create_trial(value=0.4, user_attrs={
        "arch_summary": "2D d3 w8-16-32-64 batch/relux2 transpose | no attention",
        "baseline": "plain_unet"}))
    # an interrupted search lists a queued baseline that has no architecture yet
    study.enqueue_trial({}, user_attrs={"baseline": "attention_unet"})
    for width in (80, WIDE_LEADERBOARD):
        console = Console(width=width, record=True)
        console.print(leaderboard_table(study, 5))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        narrow = width < WIDE_LEADERBOARD
        flat = " ".join(text.split())  # the console wraps a long line between words
        assert ("trial 0: " + summary in flat) == narrow, text
        assert ("architecture" in text) != narrow
        assert "plain_unet" in text and ("(plain_unet)" in text) == narrow
        assert ("trial 2: not built yet (attention_unet)" in flat) == narrow, text
        assert len(text.splitlines()) < 20, text


def test_when_a_baseline_is_the_best_it_is_not_compared_with_itself():
    """The wheel's 1-trial smoke search printed "plain_unet 0.0000 (+0.0000 ..., p = 1)": the
    best trial set against itself. A best that is a baseline is said to be one, and compared
    with the other baselines only."""
    from rich.console import Console

    from nas_attn.cli.search import print_summary
    from nas_attn.searching.report import baseline_gains, completed_baselines

    study = optuna.create_study(direction="maximize")
    plain = "2D d1 w4-8 batch/relux2 transpose | no attention"
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={
        "arch_summary": plain, "baseline": "plain_unet"}))
    study.add_trial(optuna.trial.create_trial(value=0.4, user_attrs={
        "arch_summary": plain + " gate", "baseline": "attention_unet"}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"arch_summary": "x"}))
    assert list(completed_baselines(study)) == ["plain_unet", "attention_unet"]
    gains = baseline_gains(study)
    assert [(g.label, round(g.gain, 4)) for g in gains] == [("attention_unet", 0.2)]
    console = Console(width=200, record=True)
    print_summary(study, console, None)
    text = console.export_text()
    assert "is the baseline plain_unet" in text and "the other baselines" in text
    assert "plain_unet 0.6000" not in text and "attention_unet 0.4000 (+0.2000)" in text

    alone = optuna.create_study(direction="maximize")  # the smoke run: one trial, a baseline
    alone.add_trial(optuna.trial.create_trial(value=0.0, user_attrs={
        "arch_summary": plain, "baseline": "plain_unet"}))
    assert baseline_gains(alone) == []
    console = Console(width=200, record=True)
    print_summary(alone, console, None)
    text = console.export_text()
    assert "is the baseline plain_unet" in text and "+0.0000" not in text


def test_one_patch_size_number_means_every_axis_in_search_as_in_train(cli, write_space,
                                                                      tmp_path):
    """`data: {patch_size: [16]}` is 16x16 for the cost probe as for training (it crashed the
    search's probe with a raw conv error while `train` accepted it)."""
    from conftest import TINY_SPACE

    from nas_attn.searching.study import load_study, open_existing_storage

    space = write_space(TINY_SPACE.replace("builtin_size: 24}", "builtin_size: 24, "
                                           "patch_size: [16]}"))
    code, out = cli("search", "--space", space, "--study", "p", "--runs-dir", tmp_path,
                    "--trials", "1")
    assert code == 0, out
    study = load_study("p", open_existing_storage(None, tmp_path))
    t = study.trials[0]
    assert t.state.name == "COMPLETE", t.user_attrs.get("fail_reason")
    assert t.user_attrs["data_config"]["patch_size"] == [16]
    assert t.user_attrs["flops"] > 0
