"""What the plugin sets on the trainer Axolotl built: exact step count, per-source loss, callbacks.

Everything here runs on every rank (some of it all-reduces); only file writes are limited to the main process.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from axolotl_tell import compat, ranks
from axolotl_tell.args import (DEFAULT_TASK_LOSS_WEIGHT, MEMORY_SAVING_LOSS_KEYS, config_shards_parameters,
                               resolved_task_loss_share, resolved_task_loss_weight,
                               resolved_task_loss_weight_warmup, tensor_parallel_degree)
from axolotl_tell.keep_best import (CHOICE_KEY, best_metric_key, choice_value, floor_margin, keep_best,
                                    kept_section, later_wins_ties, reported_metric_key, steps_between_evaluations)
from axolotl_tell.report import INFERENCE_FILE, write_json

LOG = logging.getLogger("axolotl.tell")
EVAL_STEPS_FILE = "tell_eval_steps.jsonl"



def prepare_trainer(plugin, cfg, trainer) -> None:
    plugin.trainer = trainer
    LOG.info("[axolotl_tell] training engine: %s", training_engine(trainer))
    plugin.train_schedule = None
    if cfg.sample_packing:
        compat.fill_pack_batches_for_ranks(trainer, lambda batches: _keep_schedule(plugin, batches))
    _set_exact_steps(plugin, cfg, trainer)
    if keep_best(cfg):
        _check_keep_best_interval(cfg, trainer)
    if cfg.get("tell_source_metrics") is not False:
        from axolotl_tell.source_metrics import SourceLossMeter, attach

        plugin.meter = SourceLossMeter(plugin.source_kinds)
        plugin.meter_replicas = tensor_parallel_degree(cfg)  # TP ranks see the same tokens
        keep = [key for key in MEMORY_SAVING_LOSS_KEYS if cfg.get(key)]
        weight = resolved_task_loss_weight(cfg)
        share = resolved_task_loss_share(cfg)
        if share is not None:
            LOG.info("[axolotl_tell] task loss share: %g (task tokens get %g of every micro-batch's training loss, "
                     "general tokens the rest)", share, share)
        elif cfg.get("tell_task_loss_weight") is None and weight != DEFAULT_TASK_LOSS_WEIGHT:
            LOG.warning("[axolotl_tell] the default tell_task_loss_weight (%g) does not apply with a memory-saving "
                        "or replaced loss: task tokens count once", DEFAULT_TASK_LOSS_WEIGHT)
        else:
            LOG.info("[axolotl_tell] task loss weight: %g (each supervised task token counts %g times in training)",
                     weight, weight)
        warmup = resolved_task_loss_weight_warmup(cfg)
        if warmup is not None:
            LOG.info("[axolotl_tell] task loss weight warm-up: from 1 to %g over the first %g of the training steps "
                     "(logged as tell/task_loss_weight)", weight, warmup)
        attach(trainer, plugin.meter, keep_model_loss=bool(keep), replicas=plugin.meter_replicas,
               task_loss_weight=weight, task_loss_share=share, task_loss_weight_warmup=warmup)
    _warn_sharded_checkpoints(cfg, trainer)
    trainer.add_callback(_RecordTrained(plugin, cfg))
    trainer.add_callback(_SpecIntoCheckpoints(plugin, cfg))
    if cfg.get("tell_eval_generate") and plugin.prepared.eval_raw:
        if sharded_parameters(cfg, trainer):
            if keep_best(cfg):  # the launcher's environment sharded what the YAML did not say
                raise ValueError("[axolotl_tell] `tell_keep_best`: the parameters are sharded (ZeRO-3/FSDP from the "
                                 "launcher or accelerate config): no rank can generate during training. Fix: use "
                                 "ZeRO-1/2 or DDP, or set `tell_keep_best: false`.")
            LOG.warning("[axolotl_tell] tell_eval_generate skipped: with ZeRO-3/FSDP/tensor or expert parallelism "
                        "the parameters are sharded and "
                        "generating on one rank would hang. Run `axolotl-tell infer` on the saved adapter.")
        else:
            trainer.add_callback(_GenerateAtEval(plugin, cfg))


def _warn_sharded_checkpoints(cfg, trainer) -> None:
    """FSDP with SHARDED_STATE_DICT saves each checkpoint as model shards, no adapter (measured on an H200, FSDP2:
    `checkpoint-N/pytorch_model_fsdp_0/`); the end of the run saves the adapter in full."""
    fsdp = cfg.get("fsdp_config") or {}
    kind = str(fsdp.get("state_dict_type") or fsdp.get("fsdp_state_dict_type") or "")
    saves = str(getattr(trainer.args, "save_strategy", "no")).lower().endswith(("steps", "epoch"))
    if "SHARDED" in kind.upper() and saves:
        LOG.warning("[axolotl_tell] fsdp_config.state_dict_type %s: each checkpoint-N will hold the model's shards "
                    "(for resuming), not a LoRA adapter `axolotl-tell infer --adapter` can load; the run's final "
                    "adapter is saved in full. For an adapter in every checkpoint use FULL_STATE_DICT.", kind)


def _keep_schedule(plugin, batches) -> None:
    """The packed micro-batches in global order (micro-batch ``k * world + rank`` is rank ``rank``'s ``k``-th)."""
    plugin.train_schedule = [[row for pack in batch for row in pack] for batch in batches]


def rows_section(plugin, trainer, steps: int) -> dict:
    """Planned rows the run trained (each counted once) and the copies that filled the ranks' last batches:
    `trained.complete` rests on rows covered, not on steps reached."""
    from axolotl_tell.pack_schedule import row_batches, rows_trained

    world = int(getattr(trainer.args, "world_size", 1) or 1)
    planned = len(trainer.train_dataset)
    schedule = plugin.train_schedule
    if schedule is None:  # unpacked: rows in order, accelerate's even_batches completes the last round
        schedule = row_batches(planned, int(trainer.args.per_device_train_batch_size), world)
    accumulation = max(int(trainer.args.gradient_accumulation_steps or 1), 1)
    per_rank = min(steps * accumulation, getattr(plugin, "micro_batches_per_rank", None) or steps * accumulation)
    return {"rows_planned": planned, **rows_trained(schedule, world, per_rank)}


def _set_exact_steps(plugin, cfg, trainer) -> None:
    """max_steps = what the dataloader yields (every planned row), unless the user set a smaller max_steps."""
    steps, batches = compat.dataloader_steps(trainer)
    plugin.steps_planned, plugin.micro_batches_per_rank = steps, batches
    user = int(cfg.get("max_steps") or 0)
    if user and user < steps:
        if ranks.is_main_process():
            LOG.warning("[axolotl_tell] WARNING: `max_steps: %d` stops the run at step %d of the %d planned steps: "
                        "only about %.0f%% of the plan (and of its task occurrences, spread through it) will be "
                        "trained. tell_report.json's `trained` section will say what was. Fix: remove `max_steps` "
                        "and size the run with `tell_task_repeats` / `tell_general_ratio`.",
                        user, user, steps, 100.0 * user / steps)
        return
    if user and user > steps:
        LOG.warning("[axolotl_tell] `max_steps: %d` is more than the planned epoch (%d steps); the run stops after "
                    "the plan (num_epochs is 1).", user, steps)
    compat.set_max_steps(trainer, steps)
    if cfg.get("warmup_ratio"):  # Axolotl turned the ratio into steps of its own estimate: follow the real count
        trainer.args.warmup_steps = max(int(float(cfg.warmup_ratio) * steps), 0)
    LOG.info("[axolotl_tell] %d optimizer steps: %d micro-batches of the planned order, gradient accumulation %d",
             steps, batches, int(trainer.args.gradient_accumulation_steps or 1))


def _check_keep_best_interval(cfg, trainer) -> None:
    """At least one evaluation before the last step: else the end point is the only candidate."""
    steps = int(trainer.args.max_steps)
    every = steps_between_evaluations(trainer.args.eval_steps, steps)
    if every >= steps:
        raise ValueError(f"[axolotl_tell] `tell_keep_best`: evaluations every {every} steps in a run of {steps} "
                         "steps: only the last step would be evaluated, so there is nothing to choose from. Fix: "
                         "lower `eval_steps`, or set `evals_per_epoch: N` (the plan is one epoch; default 7).")
    LOG.info("[axolotl_tell] tell_keep_best: %s at steps %s and the last step (%d); the best checkpoint becomes "
             "the saved adapter", best_metric_key(cfg), ", ".join(str(s) for s in range(every, steps, every)), steps)


def training_engine(trainer) -> str:
    """What wraps the model and on how many ranks, e.g. ``DeepSpeed ZeRO-3, world size 1`` or ``DDP, world size 2``."""
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    world = int(getattr(trainer.args, "world_size", 1) or 1)
    if getattr(trainer, "is_deepspeed_enabled", False):
        engine = f"DeepSpeed ZeRO-{_zero_stage(trainer)}"
    elif getattr(trainer, "is_fsdp_enabled", False):
        engine = f"FSDP{getattr(getattr(state, 'fsdp_plugin', None), 'fsdp_version', '')}"
    else:
        engine = "DDP" if world > 1 else "single process"
    return f"{engine}, world size {world}"


def _zero_stage(trainer):
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    return getattr(getattr(state, "deepspeed_plugin", None), "zero_stage", "?")


def sharded_parameters(cfg, trainer=None) -> bool:
    """ZeRO-3, FSDP or tensor parallelism: no single rank holds the whole model.

    The trainer knows what accelerate actually set up (an accelerate config or environment can turn these on
    without a YAML key); the YAML is the fallback.
    """
    if trainer is not None:
        if getattr(trainer, "is_fsdp_enabled", False):
            return True
        if getattr(trainer, "is_deepspeed_enabled", False) and _zero_stage(trainer) == 3:
            return True
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return True
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        return True
    return config_shards_parameters(cfg)


class _RecordTrained(TrainerCallback):
    """At the end of training, on every rank (it all-reduces): the steps and supervised tokens actually trained."""

    def __init__(self, plugin, cfg):
        self.plugin, self.cfg = plugin, cfg
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = int(state.global_step)  # > 0 when resumed: the tokens counted start there

    def on_train_end(self, args, state, control, **kwargs):
        tokens = self.plugin.meter.trained_tokens(self.plugin.meter_replicas) if self.plugin.meter is not None \
            else None
        self.plugin.trained = {"steps": int(state.global_step), "supervised_tokens": tokens,
                               "resumed_at_step": self.first_step or None,
                               **rows_section(self.plugin, self.plugin.trainer, int(state.global_step))}
        if args.load_best_model_at_end:  # the trainer loaded this checkpoint: it is what Axolotl saves next
            metric = (reported_metric_key(self.cfg) if args.metric_for_best_model == CHOICE_KEY
                      else args.metric_for_best_model)
            kept = kept_section(state.best_model_checkpoint, state.best_metric,
                                getattr(state, "best_global_step", None), metric,
                                self.plugin.evaluations, int(state.global_step), floor=self.plugin.floor)
            self.plugin.kept = kept
            if kept and kept.get("above_floor") is False and ranks.is_main_process():
                LOG.warning("[axolotl_tell] tell_keep_best: no evaluation beat answering %r on every eval row "
                            "(which scores %.4g on %s) by more than one standard error of the eval rows (%.3g): "
                            "the model shows no task skill the eval rows can see, so the latest such step (%d of %d) "
                            "is kept. More task rows, more eval rows, or a larger model, may help.",
                            kept["floor"]["answer"], kept["floor"]["score"], metric,
                            kept["floor"].get("margin", 0.0), kept["step"], int(state.global_step))


class _SpecIntoCheckpoints(TrainerCallback):
    """Each saved checkpoint gets the run's tell.json, so `infer --adapter CHECKPOINT` builds the trained prompt."""

    def __init__(self, plugin, cfg):
        self.plugin, self.cfg = plugin, cfg

    def on_save(self, args, state, control, **kwargs):
        if not ranks.is_local_main_process():
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            try:
                write_json(folder / INFERENCE_FILE, self.plugin.spec)
            except OSError as err:  # a checkpoint's extra file must never fail the run
                LOG.warning("[axolotl_tell] could not write %s: %s", folder / INFERENCE_FILE, err)


class _GenerateAtEval(TrainerCallback):
    """At each evaluation, on every rank: generation metrics on the task eval rows.

    Each rank generates its share of the rows and the predictions are gathered, so every rank scores the same
    numbers at the same time: none waits in a collective while another generates alone, and the metrics go
    into the trainer's evaluation metrics (``eval_tell/<name>``) on every rank, where ``metric_for_best_model``
    (``tell_keep_best``) reads them. The main rank appends them to tell_eval_steps.jsonl. A failure (out of memory,
    a metric's bug) is logged and the evaluation skipped, on every rank together: it never stops the run; under
    ``tell_keep_best`` that step scores the worst value, so it is never kept.
    """

    def __init__(self, plugin, cfg):
        self.plugin, self.cfg = plugin, cfg
        self.tokenizer = None
        self.best_key = best_metric_key(cfg) if keep_best(cfg) else None  # what the trainer compares
        self.reported_key = reported_metric_key(cfg) if keep_best(cfg) else None  # the metric it stands for
        # the plugin's generation metrics (eval_tell/*): ties go to the later step; others (eval_loss) keep
        # transformers' rule (the first of equal values)
        self.ties_to_later = self.best_key is not None and str(self.best_key).startswith("eval_tell/")
        self.best_raw = None

    def on_step_end(self, args, state, control, **kwargs):
        # tell_keep_best: the end point is a candidate too (transformers evaluates only every eval_steps)
        if self.best_key and state.global_step >= state.max_steps:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None:
            return
        from axolotl_tell.evaluate import generation_eval

        try:
            if self.tokenizer is None:
                self.tokenizer = run_tokenizer(self.plugin, self.cfg)
            result, _ = generation_eval(model, self.tokenizer, self.plugin.spec, self.plugin.prepared.eval_raw,
                                        self.cfg.tell_eval_generate,
                                        max_new_tokens=self.cfg.get("tell_eval_max_new_tokens") or 64,
                                        batch_size=generation_batch_size(self.cfg), rank=ranks.rank(),
                                        world=ranks.world_size(), gather=ranks.gather_objects)
        except Exception as err:  # noqa: BLE001 - logged; training goes on
            LOG.error("[axolotl_tell] step %d task generation eval failed, skipped (training goes on): %s: %s",
                      state.global_step, type(err).__name__, err)
            if self.best_key is not None and metrics is not None:
                metrics[self.best_key] = float("-inf") if args.greater_is_better else float("inf")
            return
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if metrics is not None:
            metrics.update({f"eval_tell/{k}": v for k, v in numbers.items()})
        if self.best_key is not None and metrics is not None and self.reported_key in metrics:
            raw = metrics[self.reported_key]
            self.plugin.evaluations.append({"step": int(state.global_step), "value": raw})
            compared = raw
            if self.best_key == CHOICE_KEY and "constant_answer_score" in numbers:
                score = numbers["constant_answer_score"]
                self.plugin.floor = {"answer": result.get("constant_answer"), "score": score,
                                     "margin": floor_margin(score, numbers.get("n"))}
                compared = choice_value(raw, score, self.plugin.floor["margin"])
            metrics[self.best_key] = compared
            if self.ties_to_later:
                metrics[self.best_key] = later_wins_ties(compared, self.best_raw, state.best_metric,
                                                         args.greater_is_better)
                better = max if args.greater_is_better else min
                self.best_raw = compared if self.best_raw is None else better(self.best_raw, compared)
        if not ranks.is_main_process():
            return
        record = {"step": state.global_step, **{k: v for k, v in result.items() if isinstance(v, (int, float, str))}}
        out = Path(self.cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / EVAL_STEPS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        LOG.info("[axolotl_tell] step %d task generation eval: %s", state.global_step, record)


def generation_batch_size(cfg) -> int:
    """Prompts generated at once: `tell_eval_batch_size`, else the training micro-batch (which fit with gradients)."""
    return int(cfg.get("tell_eval_batch_size") or cfg.get("micro_batch_size") or 1)


def run_tokenizer(plugin, cfg):
    """The tokenizer the trainer holds (loading it again can hit Axolotl's barrier on one rank only)."""
    trainer = plugin.trainer
    held = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    return held if held is not None and hasattr(held, "apply_chat_template") else compat.load_tokenizer(cfg)
