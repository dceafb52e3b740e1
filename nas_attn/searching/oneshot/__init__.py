"""One-shot search: a weight-sharing supernet over the attention sites (docs/strategies.md).

- `supernet`  `SuperNet` / `ChoiceSite` (torch): the package's own UNet built with a module of
              every choice at each site; fair per-site paths; `standalone_state` / `extract`
              give the stand-alone model of a placement; `recalibrate_bn`.
- `choices`   what the supernets of a space hold: macro combinations (capped), per-site
              modules with their option values (ranges made discrete).
- `phase1`    training each supernet once with `nas_attn.training.train` (resumable), its file.
- `objective` `OneShotObjective`: a trial scores a placement with inherited weights.
- `budget`    `PlacementBudget`: phase 2 runs until N new placements are scored (a repeat
              proposed by the sampler or a placement the constraints refuse does not count).
- `strategy`  `OneShotStrategy`: the above behind the search loop's strategy seam
              (`nas_attn.searching.strategy`): objective, sampler, phase 1, the budget.

A design note: a path of the supernet *is* `build_unet(arch)` with the supernet's tensors (the
same classes, the same forward), which `tests/test_oneshot.py` checks to 1e-5 on random paths
in 2D and 3D; so the weights a placement inherits are exactly those the stand-alone model
would load, and nothing here re-implements the UNet.
"""
