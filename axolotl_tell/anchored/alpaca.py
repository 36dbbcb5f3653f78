"""`type: axolotl_tell.anchored.alpaca`: Axolotl's `alpaca` with the TELL anchor in every row."""

from axolotl_tell.anchored import make_loader

load = make_loader("alpaca")
