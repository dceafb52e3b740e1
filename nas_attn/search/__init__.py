"""Searching: spaces, sampling, the study, trials, workers, reports and the final retraining."""

from .._callable import make_callable  # noqa: E402

make_callable(__name__)  # `na.search(...)` runs `nas_attn.api.search`
