"""One-shot search as a strategy (`nas_attn.searching.strategy`): its objective scores a
placement with inherited weights, phase 1 (the supernets) runs before the trials, and `--trials
N` means N new placements."""
from __future__ import annotations

from typing import Any

import optuna


class OneShotStrategy:
    name = "oneshot"
    score_kind = "inherited (one-shot)"
    finalize_first = True
    """Inherited scores ranked placements no better than chance where it was measured
    (docs/benchmarks/oneshot-fidelity.md): the closing line names finalize first."""

    def objective(self, space, data_cfg, runs_dir, study_name, device, listener, store):
        from .objective import OneShotObjective

        return OneShotObjective(space, data_cfg, runs_dir, study_name, device, listener, store)

    def sampler(self, objective, sampler):
        if objective.plan.fixed:  # one macro architecture: only the placements are sampled
            return optuna.samplers.PartialFixedSampler(objective.plan.fixed, sampler)
        return sampler

    def prepare(self, session) -> list[dict[str, Any]]:
        """Phase 1: the supernets trained (or resumed) and their plain paths scored, recorded
        with the study as its user attribute `oneshot`; progress goes to the listener's
        `supernet_step`."""
        from .. import optuna_adapter as OA
        from ..study import storage_errors
        from .choices import placements
        from .phase1 import ensure_supernets

        objective = session.objective
        step = getattr(objective.listener, "supernet_step", None)
        records = ensure_supernets(objective, step)
        count = sum(placements(objective.choices(m)) for m in objective.macros())
        before = session.study.user_attrs.get("oneshot") or {}
        # the same supernets as the study recorded: their plain paths' scores stand (a
        # resumed or relaunched search does not run a validation pass per macro again)
        plain = before["plain_paths"] if "plain_paths" in before and \
            before.get("supernets") == records else objective.plain_paths()
        with storage_errors(OA.storage_of(session.study)):
            session.study.set_user_attr("oneshot", {
                "supernets": records, "placements": count,
                "fixed_macro": objective.plan.fixed, "plain_paths": plain})
        return records

    def trials(self, space) -> int:
        return space.search.oneshot.trials

    def budget(self, session, trials: int):
        """`trials` new placements (`budget.PlacementBudget`), kept on the session for the
        command's summary."""
        from .budget import PlacementBudget

        session.placements = PlacementBudget.for_study(session.study, trials)
        return session.placements

    def trial_epochs(self, space) -> int:
        return 0  # a placement is scored, not trained
