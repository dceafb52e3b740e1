"""`python -m nas_attn.cli ...` is `nas-attn ...`."""
from . import main

main()
