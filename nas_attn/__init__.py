"""nas-attn: search which attention modules to put where in a segmentation UNet."""
__version__ = "0.1.0"
