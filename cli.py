"""Thin shim: `python cli.py ...` is the same as `nas-attn ...`."""
from nas_attn.cli import main

if __name__ == "__main__":
    main()
