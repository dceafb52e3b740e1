"""The `nas-attn` command line: a thin layer over the library (`nas_attn.api` and the modules it
calls) that parses options, draws progress and tables with rich, and turns a `NasAttnError` into
one line on stderr and exit code 2. Not meant to be called from Python: use `import nas_attn`.

- `app`     the typer commands (options -> library calls)
- `search`  live view of a search, `show`, `finalize`
- `workers` the parent's live view over worker processes
- `train`, `export`, `predict`, `data`: the views of those commands
"""
from .app import app, main

__all__ = ["app", "main"]
