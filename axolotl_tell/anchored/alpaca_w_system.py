"""`type: axolotl_tell.anchored.alpaca_w_system`: Axolotl's `alpaca_w_system` with the TELL anchor in every row."""

from axolotl_tell.anchored import make_loader

load = make_loader("alpaca_w_system")
