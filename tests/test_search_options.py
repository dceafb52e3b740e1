"""The search options are declared once (`nas_attn.searching.request`): the command line's
`search` and `worker`, `api.search`, its argument checks and the options passed on to worker
processes all follow that declaration."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nas_attn as na
from nas_attn.cli.app import app
from nas_attn.errors import NasAttnError
from nas_attn.searching.request import (
    RunOptions,
    SearchRequest,
    check_args,
    option,
    search_options,
    worker_options,
)

REQUEST = [f.name for f in search_options(SearchRequest)]
RUN = [f.name for f in search_options(RunOptions)]


def _flags(command: str) -> set[str]:
    """The long options a command's click parameters declare."""
    import typer.main

    cmd = typer.main.get_command(app).commands[command]
    return {o for p in cmd.params for o in p.opts if o.startswith("--")}


def test_every_option_is_declared_with_help_and_only_once():
    names = REQUEST + RUN
    assert len(names) == len(set(names))
    assert {"space", "data", "trials", "study", "storage", "seed", "strategy"} <= set(REQUEST)
    assert {"workers", "gpus", "per_gpu", "heartbeat_interval"} <= set(RUN)
    for f in search_options(SearchRequest) + search_options(RunOptions):
        assert f.metadata["help"].endswith(".") and len(f.metadata["help"]) > 10, f.name
    assert "notes" not in REQUEST  # a field that is not an option


def test_the_search_command_has_exactly_the_declared_options():
    flags = _flags("search")
    declared = {"--" + n.replace("_", "-") for n in REQUEST + RUN}
    assert flags - {"--help"} == declared | {"--cache-dir"}


def test_the_worker_command_has_the_worker_options_only():
    worker = {f.name for f in search_options(SearchRequest) if f.metadata["worker"]}
    assert {"study", "storage", "space", "data", "seed", "device"} <= worker
    assert "strategy" not in worker and "trials" not in worker
    assert _flags("worker") - {"--help"} == {"--" + n.replace("_", "-") for n in worker} | \
        {"--index"}


def test_api_search_takes_exactly_the_declared_options_with_their_defaults():
    sig = inspect.signature(na.search)
    params = [p for p in sig.parameters if p != "listener"]
    assert params == REQUEST + RUN  # the same order, so help and docs read alike
    fields = {f.name: f for f in search_options(SearchRequest) + search_options(RunOptions)}
    for name in params:
        assert Path(sig.parameters[name].default) == Path(fields[name].default) \
            if name == "runs_dir" else sig.parameters[name].default == fields[name].default, name
    doc = inspect.getdoc(na.search)
    missing = [n for n in params if f"`{n}`" not in doc]
    assert missing == []


def test_a_new_field_becomes_an_option_of_the_command_line(monkeypatch):
    """The generator itself: a dataclass with one more option field gets one more flag."""
    from nas_attn.cli.options import with_options

    @dataclasses.dataclass
    class Extra:
        colour: str | None = option(None, "A colour for the test.")
        count: int = option(3, "How many.", low=2)

    @with_options(Extra)
    def fn(**kw):
        return kw

    sig = inspect.signature(fn)
    assert list(sig.parameters) == ["colour", "count"]
    assert sig.parameters["count"].default.default == 3
    assert sig.parameters["count"].default.min == 2
    assert sig.parameters["colour"].default.param_decls == ("--colour",)


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials must be an integer >= 1 or None, got int 0"),
    ({"timeout": 0.5}, "timeout must be a number >= 1 or None, got float 0.5"),
    ({"seed": -1}, "seed must be an integer >= 0 or None, got int -1"),
    ({"space": 3}, "space must be a ready space name or the path of a YAML file, got int 3"),
    ({"data": ""}, "data must be a string"),
    ({"force_data": "yes"}, "force_data must be True or False, got str 'yes'"),
    ({"gpus": 0}, "gpus must be a string such as '0,1' or 'all', got int 0"),
    ({"per_gpu": 0}, "per_gpu must be an integer >= 1, got int 0"),
    ({"max_retry": -1}, "max_retry must be an integer >= 0 or None, got int -1"),
])
def test_api_search_checks_each_option_by_its_declaration(kwargs, message, tmp_path):
    with pytest.raises(NasAttnError, match=re.escape(message)):
        na.search(runs_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # refused before anything was created


def test_check_args_accepts_the_defaults():
    values = {f.name: f.default for f in search_options(SearchRequest) + search_options(RunOptions)}
    check_args(SearchRequest, values)
    check_args(RunOptions, values)


def test_worker_options_pass_every_set_worker_option_and_the_fixed_values(monkeypatch, tmp_path):
    req = SearchRequest(space="tiny.yaml", data="data/x", val_pattern="*_v*", sampler="random",
                        num_workers=2, device="cpu", strategy="oneshot", trials=5,
                        test_pattern="*_t*")
    journal = f"journal:{tmp_path / 'j'}"  # never opened: the worker's main is replaced
    args = worker_options(req, {"study": "s", "storage": journal, "runs_dir": str(tmp_path),
                                "space": "/abs/tiny.yaml", "seed": 7, "device": None})
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs == {"--space": "/abs/tiny.yaml", "--data": "data/x", "--val-pattern": "*_v*",
                     "--study": "s", "--storage": journal, "--runs-dir": str(tmp_path),
                     "--sampler": "random", "--seed": "7", "--num-workers": "2"}
    # and the worker command parses them back into the same request
    seen = {}

    def fake_main(r):
        seen["req"] = r
        return 0

    import nas_attn.searching as searching

    monkeypatch.setattr(searching, "worker_main", fake_main, raising=False)  # what cli reads
    res = CliRunner().invoke(app, ["worker", *args, "--index", "2"])
    assert res.exit_code == 0, res.output
    r = seen["req"]
    assert (r.space, r.data, r.val_pattern, r.sampler, r.num_workers, r.seed, r.study) == \
        ("/abs/tiny.yaml", "data/x", "*_v*", "random", 2, 9, "s")
    assert r.strategy is None and r.trials is None  # workers read those from the study
