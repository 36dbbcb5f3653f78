"""`type: axolotl_tell.anchored.completion`: Axolotl's `completion` with the TELL anchor in every row."""

from axolotl_tell.anchored import make_loader

load = make_loader("completion")
