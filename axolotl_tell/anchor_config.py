"""Which anchor a config asks for: ``tell_anchor``, ``tell_anchor_file`` or ``tell_anchor: auto``.

Above both :mod:`axolotl_tell.anchor` (what an anchor is, how it enters a row) and
:mod:`axolotl_tell.auto_anchor` (the model writes one), which it chooses between. No Axolotl import.
"""

from __future__ import annotations

from pathlib import Path

from axolotl_tell.anchor import DEFAULT_SEPARATOR, Anchor, AnchorError


def resolve_anchor(cfg, task_data=None) -> Anchor:
    """The anchor from ``tell_anchor`` or ``tell_anchor_file`` (trailing whitespace stripped).

    ``tell_anchor: auto`` generates it (or reuses the cached one) from the task
    rows: ``task_data`` is ``[(ds_cfg, raw rows), ...]`` or a callable that
    returns it (called only for ``auto``); see :mod:`axolotl_tell.auto_anchor`.
    """
    placement = cfg.get("tell_anchor_placement") or "auto"
    separator = cfg.get("tell_anchor_separator")
    separator = DEFAULT_SEPARATOR if separator is None else separator
    if str(cfg.get("tell_anchor") or "").strip() == "auto":
        if task_data is None:
            raise AnchorError("[axolotl_tell] `tell_anchor: auto` needs the task rows of `tell_task_datasets`. "
                              "Fix: for `type: axolotl_tell.anchored.*` write the anchor by hand (print one "
                              "with `axolotl-tell anchor CONFIG` on a config with `tell_task_datasets`).")
        from axolotl_tell.auto_anchor import generate_anchor  # lazy: it imports torch and transformers

        rows = task_data() if callable(task_data) else task_data
        return generate_anchor(cfg, rows, placement=placement, separator=separator).anchor
    if cfg.get("tell_anchor_file"):
        text = Path(cfg["tell_anchor_file"]).read_text(encoding="utf-8").strip()
        source = "file"
    else:
        text = (cfg.get("tell_anchor") or "").strip()
        source = "config"
    if not text:
        raise AnchorError("[axolotl_tell] `tell_anchor`: the anchor is empty. Fix: write a task description.")
    return Anchor(text=text, placement=placement, separator=separator, source=source)
