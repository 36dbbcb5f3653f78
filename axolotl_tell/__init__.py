"""axolotl_tell: Token-Efficient Leverage Learning (TELL) as an Axolotl plugin.

Enable it in an Axolotl config with ``plugins: [axolotl_tell.TellPlugin]``.
``TellPlugin`` and ``TellArgs`` are imported lazily so that the pure modules
(``axolotl_tell.plan``) load without Axolotl.
"""

from axolotl_tell.version import __version__
__all__ = ["TellPlugin", "TellArgs", "__version__"]


def __getattr__(name):
    if name == "TellPlugin":
        from axolotl_tell.plugin import TellPlugin

        return TellPlugin
    if name == "TellArgs":
        from axolotl_tell.args import TellArgs

        return TellArgs
    raise AttributeError(name)
