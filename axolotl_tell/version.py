"""The package version, in the lowest layer: every module may read it (``axolotl_tell/__init__`` re-exports it)."""

__version__ = "0.1.0"
