"""The package version, in a module of its own so that any module can import it without
importing the package (whose lazy names reach every layer)."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's version
