"""`type: axolotl_tell.anchored.chat_template`: Axolotl's `chat_template` with the TELL anchor in every row."""

from axolotl_tell.anchored import make_loader

load = make_loader("chat_template")
