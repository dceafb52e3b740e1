"""Searching: spaces, the study, the strategies, workers, reports and finalize.

Where to start: `opening.open_search(SearchRequest)` opens (or resumes) a study and returns a
`SearchSession`; `run.run_search(session, trials, timeout)` runs it; `finalize.py` and
`racing.py` retrain the best at the full budget.

The space and its trials
- `space`         the search space schema (pydantic), `STRATEGIES`, `full_budget`.
- `space_files`   reading a space file (ready spaces, YAML errors in one line).
- `sampling`      a trial's architecture and training choices from the space; the baselines.
- `cost`          parameters, FLOPs, activation memory and latency before training.
- `strategy`      the seam: `Strategy`, per-trial search (`Trials`), `get_strategy`.
- `objective`     the per-trial objective (train a candidate, report epochs, prune).
- `oneshot/`      the one-shot strategy (supernets, placements scored with inherited weights).
- `curves`        a trial's learning-curve picture.

A study and its run
- `request`       the search's options, declared once (`SearchRequest`, `RunOptions`): the
                  command line, `api.search` and the workers are made from them.
- `opening`       the study (storage, sampler, pruner, strategy), the session.
- `run`           the optimize loop of one process.
- `study`         storages and their errors; `optuna_adapter`: every use of optuna's private
                  API, tested against the installed one.
- `faults`        what stops a search (a full disk), in one line.
- `heartbeat`     dead workers' trials failed and retried.
- `parallel`, `slots`, `workers`, `worker_loop`: worker processes on one study.
- `artifacts`     the artifact store the dashboard serves.

Reading a study and deciding
- `report`        leaderboard rows, baselines, importances.
- `scores`        a trial's score with its interval, the same for both strategies.
- `finalize`      the retraining recipe and the finalize command's steps; `racing`: the race's
                  trainings and confirmation; `race_workers`, `claims`: the race on workers and
                  machines; `verdict`: the attention verdict and the result.
- `noise_check`   the plain UNet under several seeds (`nas-attn noise`).
- `trial_export`  a trial (or finalize's winner) to `nas_attn.exporting`.
"""
