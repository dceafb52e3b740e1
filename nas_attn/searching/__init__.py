"""Searching: spaces, sampling, the study, trials, workers, reports and the final retraining."""
