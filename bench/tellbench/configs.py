"""The Axolotl config of each method: what a user would write. Every method shares ``training`` settings.

* ``tell``           the plugin: task rows anchored, repeated and spread through the general pool;
* ``tell_best``      the same as ``tell`` with ``tell_keep_best``: the run evaluates the task metric on the
                     validation rows (``sft_best``'s) at 7 evenly spaced steps and its last, and keeps the best
                     checkpoint as its adapter, as a user with a few held-out rows would;
* ``tell_auto_anchor`` the same as ``tell`` with ``tell_anchor: auto``: the base model writes the anchor from 8
                     task examples (the plan's other settings are the same; task token counts follow the anchor);
* ``tell_no_anchor`` plain Axolotl on ONE file holding the TELL run's rows in the TELL plan's order, task rows
                     without the anchor (order kept: ``curriculum_sampling`` + ``shuffle_merged_datasets: false``);
* ``sft``            plain Axolotl on the task rows only, ``num_epochs`` = the TELL run's task repeats;
* ``sft_matched``    the same, run for as many optimizer steps as the TELL run (``max_steps``);
* ``sft_best``       the same, an adapter saved every epoch; the epoch count is chosen on validation rows;
* ``sft_scaled``     no training: ``sft_best``'s chosen adapter with its LoRA delta scaled (``sft_scaled.scales`` in
                     ``grids.yaml``, WiSE-FT-style), the scale chosen on the validation rows: a cheap way to keep
                     general skill that TELL has to beat;
* ``sft_anchor``     the plugin's anchored strategy as a plain dataset type (``axolotl_tell.anchored.chat_template``),
                     task rows only, ``num_epochs`` = task repeats.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml


def training_settings(grids: dict, profile: str, block_train: dict | None = None) -> dict:
    settings = copy.deepcopy(grids["training"])
    settings.update(grids["profiles"][profile])
    settings.update(block_train or {})
    return settings


def _base(model: str, settings: dict, seed: int, out: Path, prepared: Path) -> dict:
    return {"base_model": str(model), **settings, "seed": int(seed), "val_set_size": 0,
            "output_dir": str(out), "dataset_prepared_path": str(prepared)}


def chat_entry(path, ds_type: str = "chat_template") -> dict:
    return {"path": str(path), "ds_type": "json", "type": ds_type}


def tell_config(model, settings, *, seed, general_pool, task_file, anchor, task_repeats, general_ratio,
                out: Path, prepared: Path, extra_tell: dict | None = None) -> dict:
    """``extra_tell``: a grid block's `tell` keys (a lever under test, e.g. ``tell_task_loss_weight``)."""
    cfg = _base(model, settings, seed, out, prepared)
    cfg.update({
        "plugins": ["axolotl_tell.TellPlugin"],
        "datasets": [chat_entry(general_pool)],
        "tell_task_datasets": [chat_entry(task_file)],
        "tell_anchor": anchor,
        "tell_anchor_placement": "auto",
        "tell_task_repeats": task_repeats,
        "tell_general_ratio": float(general_ratio),
        "tell_spread": "even",
        "tell_general_shortfall": "warn",  # a short pool is recorded (ratio achieved), not an error
        "num_epochs": 1,
    })
    cfg.update(extra_tell or {})
    return {k: v for k, v in cfg.items() if v is not None}


def keep_best_keys(val_file: Path, metric: str, max_new_tokens: int, batch_size: int) -> dict:
    """``tell_best``: the plugin keeps the checkpoint with the best task metric on the validation rows."""
    return {"tell_task_test_datasets": [chat_entry(val_file)], "tell_eval_generate": metric,
            "tell_eval_max_new_tokens": int(max_new_tokens), "tell_eval_batch_size": int(batch_size),
            "tell_keep_best": True, "save_strategy": None}  # None: the training settings' "no" goes; the plugin saves


# the keys keep_best_keys adds to a TELL config: without them (and its output folder) a tell_best config is its tell
# twin's (bench/run.py --tell-end-from-best checks that)
KEEP_BEST_KEYS = tuple(keep_best_keys(Path("val.jsonl"), "exact_match", 1, 1))
# keys a tell_best config may add to its tell twin's and still train the same run: evaluations only read the model
EVAL_ONLY_KEYS = frozenset({"output_dir", *KEEP_BEST_KEYS, "test_datasets"})


def same_training(tell_cfg: dict, tell_best_cfg: dict) -> bool:
    """True when two TELL configs differ only in ``EVAL_ONLY_KEYS`` (``--tell-end-from-best``'s check)."""
    return ({k: v for k, v in tell_cfg.items() if k not in EVAL_ONLY_KEYS}
            == {k: v for k, v in tell_best_cfg.items() if k not in EVAL_ONLY_KEYS})


def plain_config(model, settings, *, seed, data_file, out: Path, prepared: Path, epochs: int = 1,
                 max_steps: int | None = None, ordered: bool = False, anchor: str | None = None,
                 save_every_epoch: bool = False, cpu_bf16: bool = False) -> dict:
    """``cpu_bf16``: bf16 on a CPU-only machine needs the plugin (it passes transformers' ``use_cpu``); with no
    ``tell_*`` data keys it changes nothing else, so the run stays plain Axolotl."""
    cfg = _base(model, settings, seed, out, prepared)
    if cpu_bf16:
        cfg["plugins"] = ["axolotl_tell.TellPlugin"]
    if anchor is None:
        cfg["datasets"] = [chat_entry(data_file)]
    else:  # anchored SFT: the plugin's dataset strategy, no mixing (no tell_task_datasets)
        cfg["plugins"] = ["axolotl_tell.TellPlugin"]
        cfg["datasets"] = [chat_entry(data_file, "axolotl_tell.anchored.chat_template")]
        cfg["tell_anchor"] = anchor
        cfg["tell_anchor_placement"] = "auto"
    cfg["num_epochs"] = int(epochs)
    if max_steps:
        cfg["max_steps"] = int(max_steps)
    if ordered:  # keep the file's row order through preparation and sampling, as the plugin does
        cfg.update({"curriculum_sampling": True, "shuffle_merged_datasets": False, "dataloader_drop_last": False})
    if save_every_epoch:
        # every epoch's adapter must survive to be scored: Axolotl keeps only the last 4 when the limit is unset
        cfg.update({"save_strategy": "epoch", "save_only_model": True, "save_total_limit": int(epochs) + 1})
    return {k: v for k, v in cfg.items() if v is not None}


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(cfg), encoding="utf-8")
    return path
