"""Inference: a trained model, loaded and used, without the training or export code.

- `trained`     `TrainedModel` / `InferenceConfig`: the one trained-model type (architecture,
                weights, patch size, overlap, normalisation, spacing, class names, provenance).
- `checkpoint`  reading checkpoints (`weights_only=True`; `nas_attn.training.checkpoint`
                writes them).
- `compat`      what older versions wrote (until 0.4).
- `prediction`  `load_model` (an export folder, a checkpoint, a train folder, a finalize
                result), reading images, `predict_files`, writing masks.
- `evaluation`  scores of a model on a labelled folder.
- `metrics`     the score itself: Dice per class pooled over a split, per-case counts, HD95
                (training validates with it too).
"""
