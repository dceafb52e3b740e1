"""The ready search spaces (YAML files; `nas-attn spaces` lists them)."""
