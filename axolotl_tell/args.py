"""The ``tell_*`` config keys, their defaults and their validation.

Axolotl merges :class:`TellArgs` into its config schema, so these checks run
while the YAML is loaded: before any dataset or model is touched. Every error
names the key and says how to fix it.
"""

from __future__ import annotations

import math
import os
from typing import Any

from pydantic import BaseModel, Field, model_validator

from axolotl_tell.anchor import DEFAULT_SEPARATOR
from axolotl_tell.plan import DEFAULT_GENERAL_RATIO, MAX_GENERAL_RATIO, MAX_TASK_REPEATS, SHORTFALL_POLICIES, SPREADS

PLACEMENTS = ("auto", "system", "prefix")
BUILTIN_METRICS = ("exact_match", "accuracy", "json_fields")
# Task tokens count 10 times in the training loss by default: at the default ratio 3 the task gets ~10/13 of
# every step's loss instead of ~1/4, while the general rows still anchor the rest. Chosen on validation rows
# (issue 13, bench/results/frontier_cpu.md, "Task loss weight, chosen on validation rows"): weight 10 vs 3 on
# the same task, rows and seed, validation score +0.043 on the mean of 8 pairs (none lower; 27 validation rows
# won, 10 lost, sign test p = 0.008), test +0.030; held-out general loss of every weight-10 run 0.02-0.16 nats
# below the base model's. At 100 rows (issue 24, bench/results/leverage_cpu.md) weight 3 vs 10 on object_counting,
# seed 0: validation 0.34 vs 0.46 (the default's seeds 0-2: 0.46, 0.26, 0.30), one counted loss: by the plan's stop
# rule (BENCHMARKS) the lever failed and 10 stays, on thin evidence.
DEFAULT_TASK_LOSS_WEIGHT = 10.0

# Axolotl features that would undo or bypass the planned mix.
_UNSUPPORTED_WITH_TELL = {
    "pretraining_dataset": "TELL mixes supervised instruction data; remove `pretraining_dataset`",
    "streaming": "Axolotl's streaming needs `max_steps` and bypasses the plan; stream the general data with "
                 "`tell_general_streaming: true` instead (and remove `streaming`)",
    "rl": "TELL plans supervised fine-tuning data; remove `rl:` (preference training is not supported)",
    "skip_prepare_dataset": "TELL must tokenize to count supervised tokens; remove `skip_prepare_dataset`",
    "group_by_length": "group_by_length reorders rows and breaks the planned spread; remove it",
    "use_pose": "PoSE sorts rows by length and breaks the planned spread; remove `use_pose`",
}


class TellConfigError(ValueError):
    """A ``tell_*`` key (or a key that conflicts with TELL) is wrong."""


class TellArgs(BaseModel):
    """Config keys of the TELL plugin (all optional until ``tell_task_datasets`` is set)."""

    tell_task_datasets: list[dict[str, Any]] | None = Field(
        default=None,
        json_schema_extra={
            "description": "The scarce task data: entries with the same schema and `type`s as `datasets:`."
        },
    )
    tell_anchor: str | None = Field(
        default=None,
        json_schema_extra={"description": "The anchor prompt added to every task row (and at inference)."},
    )
    tell_anchor_file: str | None = Field(
        default=None, json_schema_extra={"description": "Read the anchor from this text file instead."}
    )
    tell_anchor_placement: str | None = Field(
        default="auto",
        json_schema_extra={"description": "auto | system | prefix: where the anchor goes in a task row."},
    )
    tell_anchor_separator: str | None = Field(
        default=DEFAULT_SEPARATOR,
        json_schema_extra={"description": "Text between the anchor and the text it prefixes."},
    )
    tell_anchor_model: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "`tell_anchor: auto`: the model that writes the anchor (default: base_model)."
        },
    )
    tell_anchor_examples: int | None = Field(
        default=None,
        json_schema_extra={"description": "`tell_anchor: auto`: task examples the model reads (default 8)."},
    )
    tell_anchor_template: str | None = Field(
        default=None,
        json_schema_extra={"description": "`tell_anchor: auto`: the prompt; {examples} is replaced by the examples."},
    )
    tell_anchor_max_tokens: int | None = Field(
        default=None,
        json_schema_extra={"description": "`tell_anchor: auto`: the anchor's token budget (default 96)."},
    )
    tell_general_ratio: float | None = Field(
        default=None,
        json_schema_extra={
            "description": "General supervised tokens per task supervised token, task repeats included "
            f"(default {DEFAULT_GENERAL_RATIO:g})."
        },
    )
    tell_general_tokens: int | None = Field(
        default=None,
        json_schema_extra={"description": "An absolute general supervised-token budget (exclusive with the ratio)."},
    )
    tell_task_repeats: int | str | None = Field(
        default="auto",
        json_schema_extra={"description": "Times every task row occurs over the run, or auto."},
    )
    tell_spread: str | None = Field(
        default="even", json_schema_extra={"description": "even | random: how task rows spread through the mix."}
    )
    tell_general_shortfall: str | None = Field(
        default="error",
        json_schema_extra={
            "description": "error | warn | upsample: what to do when general data cannot meet the budget."
        },
    )

    tell_general_streaming: bool | None = Field(
        default=False,
        json_schema_extra={
            "description": "Read the general `datasets:` as streams (local files or hub datasets larger than the "
            "disk): a seeded shuffle buffer, tokenized until the budget is met."
        },
    )
    tell_general_stream_buffer: int | None = Field(
        default=None,
        json_schema_extra={"description": "Rows in the shuffle buffer of `tell_general_streaming` (default 10000)."},
    )

    tell_source_metrics: bool | None = Field(
        default=True,
        json_schema_extra={"description": "Log tell/task_loss and tell/general_loss (train and eval)."},
    )
    tell_task_loss_weight: float | None = Field(
        default=None,  # resolved_task_loss_weight: the default, or 1 where a fused loss leaves no per-token loss
        json_schema_extra={
            "description": "Each supervised task token counts this many times in the training loss (general tokens "
            "count once; the denominator is unchanged, so 1 is the plain loss). Eval losses are never weighted "
            f"(default {DEFAULT_TASK_LOSS_WEIGHT:g}; 1 with a memory-saving loss or `tell_source_metrics: false`)."
        },
    )
    tell_task_loss_share: float | None = Field(
        # off by default: share 0.75 vs the default weight 10, 7 paired runs (issue 13, bench/results/frontier_cpu.md
        # "Task loss share"): validation +0.020 (rows +14/-7, sign test p = 0.19), test -0.009: a tie, so the
        # weight stays the default and the share an option
        default=None,
        json_schema_extra={
            "description": "Instead of a weight: task tokens get this fixed share of every micro-batch's training "
            "loss, general tokens the rest, each source averaged over its own tokens (e.g. 0.75). A micro-batch "
            "with one source only trains on the plain loss. Not with `tell_task_loss_weight`; eval is never "
            "reweighted (default: off, the weight applies)."
        },
    )
    tell_task_loss_weight_warmup_ratio: float | None = Field(
        # off by default: built after a diagnostic (BENCHMARKS, issue 24, fifteenth session); its one run (object_
        # counting 10 rows seed 2, r 0.5) delayed the held-out general loss's rise but ended at 1.709 against the
        # constant weight's 1.716 (base 1.662), same task score: no validation comparison yet
        default=None,
        json_schema_extra={
            "description": "The task loss weight rises linearly from 1 at the first step to `tell_task_loss_weight` "
            "over this fraction of the training steps, then stays there (e.g. 0.5; default: off, the weight is "
            "constant). Not with `tell_task_loss_share`."
        },
    )
    tell_task_eval_rows: int | None = Field(
        default=0,
        json_schema_extra={"description": "Hold out this many task rows (seeded) as a task-only eval set."},
    )
    tell_task_test_datasets: list[dict[str, Any]] | None = Field(
        default=None,
        json_schema_extra={"description": "Task eval data (anchored like the task data, never trained on)."},
    )
    tell_eval_generate: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "Generation metric on the task eval rows at the end of training: exact_match | "
            "accuracy | json_fields | a dotted path to fn(predictions, references) -> dict."
        },
    )
    tell_eval_max_new_tokens: int | None = Field(default=64)
    tell_eval_batch_size: int | None = Field(
        default=None,
        json_schema_extra={
            "description": "Prompts generated at once by tell_eval_generate (default: micro_batch_size; halved on "
            "out-of-memory)."
        },
    )
    tell_keep_best: bool | None = Field(
        default=False,
        json_schema_extra={
            "description": "Evaluate tell_eval_generate at evenly spaced steps (evals_per_epoch, default 7, and the "
            "last step), save a checkpoint at each, and keep the one with the best task metric as the trained "
            "adapter (load_best_model_at_end). Unless metric_for_best_model is set, an evaluation no better than "
            "one fixed answer on every eval row (the rows' constant-answer floor) ties with every other such, and "
            "the later wins."
        },
    )
    tell_bake_anchor: bool | None = Field(
        default=False,
        json_schema_extra={"description": "Write the anchor into the saved chat template as the default system prompt."},
    )

    @model_validator(mode="before")
    @classmethod
    def _check_tell(cls, data: Any) -> Any:
        if isinstance(data, dict):  # any config listing the plugin: bf16 must fit a CPU-only machine's CPU
            from axolotl_tell.cpu_precision import fit_precision_to_cpu

            fit_precision_to_cpu(data)
        if isinstance(data, dict) and tell_enabled(data):
            validate_tell_config(data)
            force_planned_order(data)
        return data


def tell_enabled(cfg) -> bool:
    """TELL mixing is on when ``tell_task_datasets`` is given (even empty: that is an error).

    Without it the plugin only serves the anchored dataset types
    (``type: axolotl_tell.anchored.<type>``), e.g. for an anchored SFT baseline.
    """
    return cfg.get("tell_task_datasets") is not None


def _fail(key: str, problem: str, fix: str) -> None:
    raise TellConfigError(f"[axolotl_tell] `{key}`: {problem}. Fix: {fix}.")


def validate_tell_config(cfg: dict) -> None:
    """Raise :class:`TellConfigError` on the first wrong or conflicting key."""
    tasks = cfg.get("tell_task_datasets")
    example = "`- {path: data/task.jsonl, ds_type: json, type: alpaca}`"
    if tasks is not None and not isinstance(tasks, list):
        _fail("tell_task_datasets", f"must be a list of dataset entries, got a {type(tasks).__name__}",
              f"write it as a YAML list, e.g. {example}")
    if not tasks:
        _fail("tell_task_datasets", "no task data given", f"list at least one dataset entry, e.g. {example}")
    for i, entry in enumerate(tasks):
        if not isinstance(entry, dict) or not entry.get("path"):
            _fail(f"tell_task_datasets[{i}]", "each entry needs a `path`",
                  "write entries like those under `datasets:`")
        if not entry.get("type"):
            _fail(f"tell_task_datasets[{i}].type", "missing", "set the dataset `type` (alpaca, chat_template, completion)")
        _check_task_type(f"tell_task_datasets[{i}].type", entry["type"])

    anchor, anchor_file = cfg.get("tell_anchor"), cfg.get("tell_anchor_file")
    if anchor is not None and anchor_file is not None:
        _fail("tell_anchor", "both `tell_anchor` and `tell_anchor_file` are set", "keep one of them")
    if anchor is None and anchor_file is None:
        _fail("tell_anchor", "no anchor prompt given", "set `tell_anchor: \"...\"` or `tell_anchor_file: path`")
    if anchor is not None and not isinstance(anchor, str):
        _fail("tell_anchor", f"must be a string, got a {type(anchor).__name__}",
              "write the task description as one (quoted) YAML string")
    if anchor is not None and not anchor.strip():
        _fail("tell_anchor", "the anchor is empty", "write a semantically rich task description")
    if anchor_file is not None:
        if not isinstance(anchor_file, str) or not os.path.isfile(anchor_file):
            _fail("tell_anchor_file", f"file not found: {anchor_file}", "give an existing text file "
                  "(relative paths are read from the directory you run axolotl in)")
        _check_anchor_file(anchor_file)
    _validate_auto_anchor(cfg, isinstance(anchor, str) and anchor.strip() == "auto")

    placement = cfg.get("tell_anchor_placement", "auto") or "auto"
    if placement not in PLACEMENTS:
        _fail("tell_anchor_placement", f"unknown value {placement!r}", f"use one of {', '.join(PLACEMENTS)}")
    if placement == "system":
        for i, entry in enumerate(tasks):
            base = entry["type"].split(":")[0]
            if base == "completion" or (base.startswith("alpaca") and not base.endswith("_w_system")):
                _fail("tell_anchor_placement", f"`system` does not fit `tell_task_datasets[{i}]` (`type: "
                      f"{entry['type']}` has no system turn or per-row system field)",
                      "use `auto` or `prefix`, or an `alpaca_w_system` / `chat_template` type")
    spread = cfg.get("tell_spread", "even") or "even"
    if spread not in SPREADS:
        _fail("tell_spread", f"unknown value {spread!r}", f"use one of {', '.join(SPREADS)}")
    shortfall = cfg.get("tell_general_shortfall", "error") or "error"
    if shortfall not in SHORTFALL_POLICIES:
        _fail("tell_general_shortfall", f"unknown value {shortfall!r}", f"use one of {', '.join(SHORTFALL_POLICIES)}")
    sep = cfg.get("tell_anchor_separator", DEFAULT_SEPARATOR)
    if sep is not None and not isinstance(sep, str):
        _fail("tell_anchor_separator", "must be a string", "e.g. \"\\n\\n\"")

    ratio, tokens = cfg.get("tell_general_ratio"), cfg.get("tell_general_tokens")
    if ratio is not None and tokens is not None:
        _fail("tell_general_ratio", "both `tell_general_ratio` and `tell_general_tokens` are set",
              "keep one: a ratio to the task tokens, or an absolute general token budget")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0
                              or not math.isfinite(ratio)):
        _fail("tell_general_ratio", f"must be a finite number > 0, got {ratio!r}", "e.g. `tell_general_ratio: 3`")
    if ratio is not None and ratio > MAX_GENERAL_RATIO:
        _fail("tell_general_ratio", f"{ratio!r} is more than the maximum of {MAX_GENERAL_RATIO:,} general supervised "
              "tokens per task token", "e.g. `tell_general_ratio: 3`; for an absolute budget use `tell_general_tokens`")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        _fail("tell_general_tokens", f"must be an integer >= 1, got {tokens!r}", "e.g. `tell_general_tokens: 2000000`")

    repeats = cfg.get("tell_task_repeats", "auto")
    if repeats is None:
        repeats = "auto"
    if repeats != "auto" and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        _fail("tell_task_repeats", f"must be an integer >= 1 or `auto`, got {repeats!r}", "e.g. `tell_task_repeats: 20`")
    if repeats != "auto" and repeats > MAX_TASK_REPEATS:
        _fail("tell_task_repeats", f"{repeats} is more than the maximum of {MAX_TASK_REPEATS:,} repeats per task row",
              "e.g. `tell_task_repeats: 20` (or `auto`); add task rows rather than repeating a few that often")
    _check_seed(cfg.get("seed"))

    if cfg.get("dataset_exact_deduplication") and repeats != 1:
        _fail("dataset_exact_deduplication", "it would collapse the planned task repeats into one row",
              "remove `dataset_exact_deduplication` (or set `tell_task_repeats: 1`)")
    val = cfg.get("val_set_size") or 0
    if val:
        _fail("val_set_size", f"{val} would take rows out of the scarce task data and the planned mix",
              "set `val_set_size: 0` and give a separate eval set with `test_datasets:`")
    epochs = cfg.get("num_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))):
        _fail("num_epochs", f"must be 1 with TELL, got {epochs!r}", "set `num_epochs: 1`")
    if epochs is not None and float(epochs) != 1.0:
        _fail("num_epochs", f"{epochs} would repeat the whole plan (and every task row) {epochs} times",
              "set `num_epochs: 1`; use `tell_task_repeats` and `tell_general_ratio` to size the run")
    eval_rows = cfg.get("tell_task_eval_rows") or 0
    if isinstance(eval_rows, bool) or not isinstance(eval_rows, int) or eval_rows < 0:
        _fail("tell_task_eval_rows", f"must be an integer >= 0, got {eval_rows!r}", "e.g. `tell_task_eval_rows: 20`")
    if eval_rows and cfg.get("tell_task_test_datasets"):
        _fail("tell_task_eval_rows", "both `tell_task_eval_rows` and `tell_task_test_datasets` are set",
              "keep one source of task eval rows")
    tests = cfg.get("tell_task_test_datasets")
    if tests is not None and (not isinstance(tests, list) or not all(isinstance(e, dict) and e.get("path") for e in tests)):
        _fail("tell_task_test_datasets", "must be a list of dataset entries with a `path`", "write them like `datasets:` entries")
    generate = cfg.get("tell_eval_generate")
    if generate and generate not in BUILTIN_METRICS:
        _check_metric_importable(str(generate), cfg.get("axolotl_config_path"))
    if generate and not (eval_rows or tests):
        _fail("tell_eval_generate", "there are no task eval rows to generate for",
              "set `tell_task_eval_rows: N` or `tell_task_test_datasets`")
    if generate and any(str(e.get("type")).split(":")[0] == "completion" for e in tasks + (tests or [])):
        _fail("tell_eval_generate", "`type: completion` task rows have no separate answer to score",
              "remove `tell_eval_generate` (the per-source eval loss still runs), or use alpaca / chat_template rows")
    max_new = cfg.get("tell_eval_max_new_tokens")
    if max_new is not None and not _int_at_least(max_new, 1):
        _fail("tell_eval_max_new_tokens", f"must be an integer >= 1, got {max_new!r}", "e.g. `tell_eval_max_new_tokens: 64`")
    gen_batch = cfg.get("tell_eval_batch_size")
    if gen_batch is not None and not _int_at_least(gen_batch, 1):
        _fail("tell_eval_batch_size", f"must be an integer >= 1, got {gen_batch!r}", "e.g. `tell_eval_batch_size: 8`")
    buffer = cfg.get("tell_general_stream_buffer")
    if buffer is not None and not _int_at_least(buffer, 1):
        _fail("tell_general_stream_buffer", f"must be an integer >= 1, got {buffer!r}",
              "e.g. `tell_general_stream_buffer: 10000`")
    if buffer is not None and not cfg.get("tell_general_streaming"):
        _fail("tell_general_stream_buffer", "only used with `tell_general_streaming: true`",
              "set `tell_general_streaming: true`, or remove the key")
    if cfg.get("tell_general_streaming"):
        _check_one_streamed_type(cfg.get("datasets") or [])
    for key in ("tell_source_metrics", "tell_bake_anchor", "tell_general_streaming", "tell_keep_best"):
        if cfg.get(key) is not None and not isinstance(cfg.get(key), bool):
            _fail(key, f"must be true or false, got {cfg.get(key)!r}", f"write `{key}: true` or `{key}: false`")
    _check_keep_best(cfg)
    if cfg.get("tell_bake_anchor"):
        _check_bake(cfg, tasks)
    for key, fix in _UNSUPPORTED_WITH_TELL.items():
        if cfg.get(key):
            _fail(key, "not supported together with TELL", fix)
    _check_training_paths(cfg)
    if cfg.get("curriculum_sampling") is False:
        _fail("curriculum_sampling", "false would let the trainer reshuffle the planned order",
              "remove the key; the plugin turns it on")
    if cfg.get("sample_packing") and cfg.get("sample_packing_sequentially") is False:
        _fail("sample_packing_sequentially", "false would let the packer reorder the planned rows",
              "remove the key; the plugin turns it on with sample_packing")


def _check_keep_best(cfg: dict) -> None:
    """`tell_keep_best` chooses among checkpoints by the task generation metric: it needs that metric at every
    evaluation, on every rank, and step saves that match the step evaluations."""
    if not cfg.get("tell_keep_best"):
        return
    from axolotl_tell.keep_best import best_metric_key

    if not cfg.get("tell_eval_generate"):
        _fail("tell_keep_best", "needs a task metric to choose by, and `tell_eval_generate` is not set",
              "set `tell_eval_generate: exact_match` (or accuracy, json_fields, a dotted function) and task eval "
              "rows (`tell_task_eval_rows: N` or `tell_task_test_datasets`)")
    if best_metric_key(cfg) is None:
        _fail("tell_keep_best", f"`tell_eval_generate: {cfg.get('tell_eval_generate')}` is a custom function: "
              "which of its numbers to maximise is not known",
              "set `metric_for_best_model: tell/<key your function returns>` (and `greater_is_better: false` "
              "if lower is better)")
    if config_shards_parameters(cfg):
        _fail("tell_keep_best", "with ZeRO-3, FSDP, tensor or expert parallelism no rank holds the whole model to "
              "generate with during training",
              "use ZeRO-1/2 or DDP for a run that keeps the best checkpoint, or set `tell_keep_best: false` and "
              "score the saved checkpoints with `axolotl-tell infer`")
    for key, allowed in (("save_strategy", ("steps",)), ("eval_strategy", ("steps",))):
        if cfg.get(key) not in (None, *allowed):
            _fail(key, f"`{cfg.get(key)}` conflicts with `tell_keep_best`, which saves and evaluates at the same "
                  "steps", f"remove `{key}` (the plugin sets it)")
    if cfg.get("save_steps") and cfg.get("save_steps") != cfg.get("eval_steps"):
        _fail("save_steps", "`tell_keep_best` saves a checkpoint at every evaluation (save_steps = eval_steps)",
              "remove `save_steps`; set `evals_per_epoch: N` (or `eval_steps`) to choose how often")
    evals = cfg.get("evals_per_epoch")
    if evals is not None and not _int_at_least(evals, 1):
        _fail("evals_per_epoch", f"must be an integer >= 1, got {evals!r}", "e.g. `evals_per_epoch: 7`")


def _deepspeed_config(cfg) -> dict:
    """The `deepspeed:` config as a dict (a JSON file is read; a broken one is Axolotl's to report)."""
    import json

    ds = cfg.get("deepspeed")
    if isinstance(ds, str) and os.path.isfile(ds):
        try:
            with open(ds, encoding="utf-8") as f:
                ds = json.load(f)
        except ValueError:
            return {}
    return ds if isinstance(ds, dict) else {}


def tensor_parallel_degree(cfg) -> int:
    """Ranks that hold slices of the same layers and see the same tokens: Axolotl's `tensor_parallel_size`, or
    DeepSpeed AutoTP's `tensor_parallel.autotp_size` (per-source token counts are divided by it)."""
    autotp = (_deepspeed_config(cfg).get("tensor_parallel") or {}).get("autotp_size") or 1
    return max(int(cfg.get("tensor_parallel_size") or 1), int(autotp))


def config_shards_parameters(cfg) -> bool:
    """The config asks for parameters no single rank holds whole: ZeRO-3, FSDP, tensor parallelism (Axolotl's or
    DeepSpeed AutoTP) or expert parallelism (the launcher's environment can too: see
    ``training.sharded_parameters``, which also asks the trainer)."""
    if tensor_parallel_degree(cfg) > 1 or cfg.get("fsdp") or cfg.get("fsdp_config"):
        return True
    if int(cfg.get("expert_parallel_size") or 1) > 1:
        return True
    return (_deepspeed_config(cfg).get("zero_optimization") or {}).get("stage") == 3


# Axolotl keys that choose a memory-saving loss: the per-source loss must not replace it with a full float32 CE.
MEMORY_SAVING_LOSS_KEYS = ("chunked_cross_entropy", "liger_cross_entropy", "liger_fused_linear_cross_entropy",
                           "cut_cross_entropy")
# Axolotl keys that compute the training loss outside the model (a `compute_loss_func`): no per-token weights.
LOSS_REPLACING_KEYS = ("use_eaft",)
MAX_TASK_LOSS_WEIGHT = 1000.0


def _check_task_loss_weight(cfg: dict) -> None:
    """`tell_task_loss_weight` needs the per-token, source-aware training loss: the stock cross-entropy with the
    per-source metrics on. A memory-saving loss never gives per-token losses, so the weight would be ignored."""
    weight = cfg.get("tell_task_loss_weight")
    if weight is None:
        return  # the default steps aside by itself where it cannot apply (resolved_task_loss_weight)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 < weight <= MAX_TASK_LOSS_WEIGHT:
        _fail("tell_task_loss_weight", f"must be a number > 0 and <= {MAX_TASK_LOSS_WEIGHT:g}, got {weight!r}",
              "e.g. `tell_task_loss_weight: 4` (1 = the plain loss)")
    if float(weight) != 1.0:
        _check_per_token_loss(cfg, "tell_task_loss_weight", weight, "weight", "set `tell_task_loss_weight: 1`")


def _check_per_token_loss(cfg: dict, key: str, value, what: str, undo: str) -> None:
    """A key that reweights the per-token, source-aware loss needs that loss: the per-source metrics on and
    transformers' stock cross-entropy (a memory-saving or replaced loss never gives per-token losses)."""
    if cfg.get("tell_source_metrics") is False:
        _fail(key, f"the {what} is applied by the per-source loss, which `tell_source_metrics: false` turns off",
              f"remove `tell_source_metrics: false`, or the {what}")
    fused = [k for k in MEMORY_SAVING_LOSS_KEYS + LOSS_REPLACING_KEYS if cfg.get(k)]
    if fused:
        _fail(fused[0], f"a fused, chunked or replaced loss gives no per-token losses, so `{key}: {value}` "
              "could not be applied", f"remove `{fused[0]}`, or {undo}")


def _check_task_loss_share(cfg: dict) -> None:
    """`tell_task_loss_share` reweights the per-token, source-aware loss like the weight does, so it needs the
    same, and replaces the weight: both set would leave the user unsure which applied."""
    share = cfg.get("tell_task_loss_share")
    if share is None:
        return
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) \
            or not 0 < share < 1:
        _fail("tell_task_loss_share", f"must be a number between 0 and 1 (exclusive), got {share!r}",
              "e.g. `tell_task_loss_share: 0.75` (the task's share of each micro-batch's loss)")
    if cfg.get("tell_task_loss_weight") is not None:
        _fail("tell_task_loss_share", "it replaces `tell_task_loss_weight`, which is set too",
              "keep one of the two keys")
    _check_per_token_loss(cfg, "tell_task_loss_share", share, "share", "remove `tell_task_loss_share`")


def _check_task_loss_weight_warmup(cfg: dict) -> None:
    """`tell_task_loss_weight_warmup_ratio` ramps the weight, so it needs one above or below 1 and the per-token loss
    the weight needs; the share has no weight to ramp."""
    ratio = cfg.get("tell_task_loss_weight_warmup_ratio")
    if ratio is None:
        return
    key = "tell_task_loss_weight_warmup_ratio"
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or not 0 < ratio <= 1:
        _fail(key, f"must be a number > 0 and <= 1 (the fraction of the training steps over which the task loss "
              f"weight rises from 1), got {ratio!r}", f"e.g. `{key}: 0.5`")
    if cfg.get("tell_task_loss_share") is not None:
        _fail(key, "it warms up `tell_task_loss_weight`, and `tell_task_loss_share` replaces the weight",
              f"keep `tell_task_loss_share` or `{key}`, not both")
    weight = cfg.get("tell_task_loss_weight")
    if weight is not None and float(weight) == 1.0:
        _fail(key, "`tell_task_loss_weight` is 1, so there is nothing to warm up",
              f"remove `{key}`, or set `tell_task_loss_weight` to the weight it should reach")
    _check_per_token_loss(cfg, key, ratio, "weight's warm-up", f"remove `{key}`")


def _check_training_paths(cfg: dict) -> None:
    """Axolotl training paths that would undo the plan or break the per-source loss: refused before any data."""
    _check_task_loss_weight(cfg)
    _check_task_loss_share(cfg)
    _check_task_loss_weight_warmup(cfg)
    if cfg.get("balance_labels"):  # axolotl >= 0.21: replaces the sequential sampler (unpacked) or fails (packed)
        _fail("balance_labels", "it reorders rows by label and replaces the planned order",
              "remove `balance_labels`; TELL's even spread already balances task and general rows")
    metrics_on = cfg.get("tell_source_metrics") is not False
    if metrics_on and int(cfg.get("context_parallel_size") or 1) > 1:
        _fail("context_parallel_size", "sequence parallelism splits `labels` across ranks but not the per-token "
              "source ids of the per-source loss", "set `tell_source_metrics: false` to train with context "
              "parallelism (the mix and its order are unaffected), or `context_parallel_size: 1`")


def _check_metric_importable(name: str, config_path: str | None) -> None:
    """A dotted ``tell_eval_generate`` is imported now, not after training (where a typo lost the adapter).

    A module next to the config is found too (the `axolotl` command does not put that folder on ``sys.path``):
    the folder is added, so the run imports the same function later.
    """
    import importlib
    import sys

    if "." not in name:
        _fail("tell_eval_generate", f"unknown metric {name!r}",
              "use exact_match, accuracy, json_fields, or a dotted path `package.module.function`")
    module, _, attr = name.rpartition(".")
    folders = [os.getcwd()] + ([os.path.dirname(os.path.abspath(config_path))] if config_path else [])
    for folder in folders:
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's to fix, with its message
        _fail("tell_eval_generate", f"cannot import {name!r} ({type(err).__name__}: {err})",
              "give an importable `package.module.function` (a module next to the config or in the working "
              "directory works), or a built-in metric: exact_match, accuracy, json_fields")
    if not callable(fn):
        _fail("tell_eval_generate", f"{name!r} is not a function", "point it at `fn(predictions, references) -> dict`")


def _check_seed(seed) -> None:
    """The plan's only source of randomness: a non-negative integer (numpy's SeedSequence refuses negatives)."""
    if seed is not None and not _int_at_least(seed, 0):
        _fail("seed", f"must be an integer >= 0, got {seed!r}", "e.g. `seed: 42` (or remove it: TELL then uses 42)")


def _check_task_type(key: str, ds_type) -> None:
    """Task data must be a family the anchor knows how to enter (checked here, before any data is read)."""
    from axolotl_tell.anchor import AnchorError, dataset_family

    if not isinstance(ds_type, str):
        _fail(key, f"must be a type name, got {ds_type!r}",
              "use an alpaca-style type (alpaca, alpaca_w_system, alpaca_chat, ...), chat_template, or completion")
    try:
        dataset_family(ds_type)
    except AnchorError:
        _fail(key, f"dataset type {ds_type!r} is not supported for task data",
              "use an alpaca-style type (alpaca, alpaca_w_system, alpaca_chat, ...), chat_template, or completion")


def _check_anchor_file(path: str) -> None:
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError as err:
        with open(path, "rb") as f:
            line = f.read()[: err.start].count(b"\n") + 1
        _fail("tell_anchor_file", f"{path}:{line} is not UTF-8 text", "re-save the anchor file as UTF-8")
    if not text.strip():
        _fail("tell_anchor_file", f"{path} is empty", "write the task description into the file")


def _check_bake(cfg: dict, tasks: list) -> None:
    """`tell_bake_anchor` needs the anchor as a system turn: fail now, not after training."""
    placement = cfg.get("tell_anchor_placement") or "auto"
    for i, entry in enumerate(tasks):
        base = str(entry.get("type")).split(":")[0]
        if base != "chat_template" or placement == "prefix":
            _fail("tell_bake_anchor", f"needs the anchor as a system turn, but `tell_task_datasets[{i}]` is "
                  f"`type: {entry.get('type')}` with `tell_anchor_placement: {placement}`",
                  "bake only chat_template task data with placement auto or system, or remove `tell_bake_anchor`")


def _int_at_least(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


def _check_one_streamed_type(entries: list) -> None:
    """Streamed general entries are interleaved row by row into one shuffle buffer: one `type` for all of them."""

    def value(entry, key):  # a dict, or already Axolotl's dataset model when its schema validates first
        return entry.get(key) if isinstance(entry, dict) else getattr(entry, key, None)

    first = entries[0] if entries else None
    for i, entry in enumerate(entries[1:], 1):
        if str(value(entry, "type")) != str(value(first, "type")):
            _fail("tell_general_streaming", f"streamed general entries share one `type`, but `datasets[0]` "
                  f"({value(first, 'path')}) has `type: {value(first, 'type')}` and `datasets[{i}]` "
                  f"({value(entry, 'path')}) has `type: {value(entry, 'type')}`",
                  "stream entries of one `type` (convert the rows of one file to the other's format), or set "
                  "`tell_general_streaming: false` (each entry is then tokenized with its own `type`)")


def _validate_auto_anchor(cfg: dict, auto: bool) -> None:
    """The `tell_anchor_*` keys of self-generated anchors (`tell_anchor: auto`)."""
    keys = ("tell_anchor_model", "tell_anchor_examples", "tell_anchor_template", "tell_anchor_max_tokens")
    if not auto:
        for key in keys:
            if cfg.get(key) is not None:
                _fail(key, "only used with `tell_anchor: auto`", "set `tell_anchor: auto`, or remove the key")
        return
    model = cfg.get("tell_anchor_model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        _fail("tell_anchor_model", "must be a model name or folder",
              "e.g. `tell_anchor_model: HuggingFaceTB/SmolLM2-1.7B-Instruct`")
    if model is None and not cfg.get("base_model"):
        _fail("tell_anchor", "`auto` needs a model to write the anchor", "set `base_model` or `tell_anchor_model`")
    k = cfg.get("tell_anchor_examples")
    if k is not None and not _int_at_least(k, 1):
        _fail("tell_anchor_examples", f"must be an integer >= 1, got {k!r}", "e.g. `tell_anchor_examples: 8`")
    template = cfg.get("tell_anchor_template")
    if template is not None and (not isinstance(template, str) or "{examples}" not in template):
        _fail("tell_anchor_template", "must be a string containing `{examples}` (where the task examples go)",
              "add `{examples}` to the template, or remove the key for the default template")
    budget = cfg.get("tell_anchor_max_tokens")
    if budget is not None and not _int_at_least(budget, 1):
        _fail("tell_anchor_max_tokens", f"must be an integer >= 1, got {budget!r}",
              "e.g. `tell_anchor_max_tokens: 96`")


def force_planned_order(cfg: dict) -> None:
    """Make Axolotl's sampler keep the planned order: sequential, packed in order, no dropped tail.

    Axolotl drops the last partial batch by default; with an even spread that
    batch can hold a task occurrence, so the plugin keeps it unless told otherwise.
    """
    cfg["curriculum_sampling"] = True
    if cfg.get("sample_packing"):
        cfg["sample_packing_sequentially"] = True
    if cfg.get("dataloader_drop_last") is None:
        cfg["dataloader_drop_last"] = False
    if (cfg.get("tell_task_eval_rows") or cfg.get("tell_task_test_datasets")) and cfg.get("eval_sample_packing") is None:
        cfg["eval_sample_packing"] = False  # a few task eval rows: packing would leave no full batch
    if cfg.get("tell_source_metrics", True) is not False:
        cfg["remove_unused_columns"] = False  # `tell_source` must reach the collator


def resolved_repeats(cfg) -> int | str:
    value = cfg.get("tell_task_repeats")
    return "auto" if value in (None, "auto") else int(value)


def resolved_ratio(cfg) -> float | None:
    """The general ratio in force: the given one, none if a token budget is given, else the default."""
    if cfg.get("tell_general_tokens") is not None:
        return None
    ratio = cfg.get("tell_general_ratio")
    return float(ratio) if ratio is not None else DEFAULT_GENERAL_RATIO


def resolved_task_loss_weight(cfg) -> float:
    """The task loss weight in force: the given one; else the default, or 1 where the default cannot apply (a
    memory-saving or replaced loss, or the per-source loss turned off: set explicitly, those are config errors)."""
    weight = cfg.get("tell_task_loss_weight")
    if weight is not None:
        return float(weight)
    if cfg.get("tell_task_loss_share") is not None:
        return 1.0  # the share replaces the weight
    if cfg.get("tell_source_metrics") is False or any(cfg.get(k) for k in MEMORY_SAVING_LOSS_KEYS + LOSS_REPLACING_KEYS):
        return 1.0
    return DEFAULT_TASK_LOSS_WEIGHT


def resolved_task_loss_weight_warmup(cfg) -> float | None:
    """The fraction of the training steps over which the task loss weight rises from 1, or None (constant)."""
    ratio = cfg.get("tell_task_loss_weight_warmup_ratio")
    return None if ratio is None else float(ratio)


def resolved_task_loss_share(cfg) -> float | None:
    """The task's fixed share of each micro-batch's training loss, or None (off: the weight applies)."""
    share = cfg.get("tell_task_loss_share")
    return None if share is None else float(share)
