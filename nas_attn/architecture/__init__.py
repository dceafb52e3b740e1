"""A UNet's architecture: its description, the attention registry, the builder and its memory
bound (docs/architecture.md). Above `nas_attn.models` (the torch modules), below everything
that searches, trains, exports or loads.

- `description` `UNetArch` / `AttnSpec` / `BlockSpec`: the one architecture description
                (frozen, validated, JSON with a format version); what a trial samples, what
                arch.json holds, what every other layer passes around.
- `registry`    attention names, kinds, families and options over `models.ATTENTION`
                (options read from constructor signatures); `create_attention`, `register`.
- `builder`     `build_unet(arch)`: a description to a `models.UNet` / `TimmUNet`; the plain
                numbers (`unet_kwargs`) that exported model.py files also take.
- `footprint`   a lower bound of a description's training memory (weights, gradients, Adam's
                moments, saved activations times the batch), checked before anything is allocated.

Top to bottom inside the package: builder, footprint, description, registry
(`tests/test_layout.py` checks it). A new attention module is a file in `nas_attn.models` and
a row of its `ATTENTION` table; nothing here changes.
"""
