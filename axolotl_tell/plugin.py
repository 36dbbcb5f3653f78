"""TellPlugin: each Axolotl hook hands off to one module."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from axolotl_tell import compat
from axolotl_tell.args import tell_enabled
from axolotl_tell.prepare import SOURCE_COLUMN, PreparedTell, load_general, prepare_tell_datasets
from axolotl_tell.report import format_table, write_json, write_outputs

LOG = logging.getLogger("axolotl.tell")
EVAL_PREDICTIONS_FILE = "tell_eval.jsonl"
EVAL_METRICS_FILE = "tell_eval.json"
EVAL_STEPS_FILE = "tell_eval_steps.jsonl"


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class TellPlugin(BasePlugin):
    """Token-Efficient Leverage Learning: anchored task data spread through general data."""

    def __init__(self):
        super().__init__()
        self.prepared: PreparedTell | None = None
        self.source_kinds: dict[int, str] = {}
        self.trainer = None
        self.finished = False

    def get_input_args(self) -> str:
        return "axolotl_tell.args.TellArgs"

    def register(self, cfg: dict):
        compat.check_axolotl_version()

    def load_datasets(self, cfg, preprocess: bool = False):
        if not tell_enabled(cfg):
            return None  # plain Axolotl loading (anchored `type:`s still work there)
        tokenizer = compat.load_tokenizer(cfg)
        self.prepared = prepared = prepare_tell_datasets(cfg, tokenizer)
        if _is_main_process():
            write_outputs(cfg.output_dir, prepared.report, cfg)
            LOG.info("\n%s", format_table(prepared.report))
        self.source_kinds = {s["id"]: s["kind"] for s in prepared.report["sources"]}
        keep_sources = cfg.get("tell_source_metrics") is not False
        train = prepared.train_dataset
        eval_parts = [prepared.eval_dataset] if prepared.eval_dataset is not None else []
        if cfg.test_datasets:  # general eval data, tokenized as plain Axolotl does
            general_eval, _ = load_general(cfg, tokenizer, cfg.test_datasets, split="test")
            general_id = max(self.source_kinds) + 1
            self.source_kinds[general_id] = "general"
            eval_parts.append(compat.drop_long_rows(general_eval, cfg).map(lambda _: {SOURCE_COLUMN: general_id}))
        eval_dataset = _concat(eval_parts)
        if eval_dataset is not None and cfg.sample_packing and cfg.eval_sample_packing is not False:
            eval_dataset = compat.prepare_for_packing(eval_dataset, cfg)
        if not keep_sources:
            train = train.remove_columns(SOURCE_COLUMN)
            eval_dataset = eval_dataset.remove_columns(SOURCE_COLUMN) if eval_dataset is not None else None
        if preprocess or os.environ.get("AXOLOTL_IS_PREPROCESS") == "1":
            return compat.train_dataset_meta(train, eval_dataset, -1)
        if cfg.sample_packing and int(os.environ.get("WORLD_SIZE", "1")) > 1 and _is_main_process():
            LOG.warning("[axolotl_tell] packed multi-GPU run: Axolotl's packer drops the last (packs mod world size) "
                        "packs, so the last few planned rows may not be trained (see README, Multi-GPU and resume).")
        return compat.train_dataset_meta(train, eval_dataset, compat.total_num_steps(cfg, train))

    def post_trainer_create(self, cfg, trainer):
        self.trainer = trainer
        if self.prepared is not None:
            LOG.info("[axolotl_tell] training engine: %s", training_engine(trainer))
        if self.prepared is not None and cfg.get("tell_source_metrics") is not False:
            from axolotl_tell.source_metrics import SourceLossMeter, attach

            attach(trainer, SourceLossMeter(self.source_kinds))
        if self.prepared is not None and cfg.get("tell_eval_generate") and self.prepared.eval_raw \
                and not _sharded_parameters(cfg):
            trainer.add_callback(_GenerateAtEval(self, cfg))

    def post_train(self, cfg, model):
        # Axolotl calls this twice; the work below runs once.
        if self.prepared is None or self.finished:
            return
        self.finished = True
        if not _is_main_process():
            return
        out = Path(cfg.output_dir)
        write_outputs(out, self.prepared.report, cfg)
        if cfg.get("tell_eval_generate") and self.prepared.eval_raw:
            if _sharded_parameters(cfg):
                LOG.warning("[axolotl_tell] tell_eval_generate skipped: with ZeRO-3/FSDP the parameters are sharded "
                            "and generating on one rank would hang. Run `axolotl-tell infer` on the saved adapter.")
            else:
                self._generation_eval(cfg, model, out)
        self._plots(cfg, out)
        if cfg.get("tell_bake_anchor"):
            self._bake(out)

    def post_lora_merge(self, cfg, adapter_path, output_path):
        # axolotl >= 0.21 calls this after `axolotl merge-lora`; on 0.19 run `axolotl-tell bake CONFIG --into DIR`
        if cfg.get("tell_bake_anchor") and tell_enabled(cfg) and _is_main_process():
            self._bake(Path(output_path), spec_dir=Path(cfg.output_dir))

    def _bake(self, folder: Path, spec_dir: Path | None = None):
        from axolotl_tell.bake import bake_anchor
        from axolotl_tell.prompting import load_spec

        bake_anchor(folder, load_spec(spec_dir or folder))
        LOG.info("[axolotl_tell] anchor baked into the chat template saved in %s", folder)

    def _generation_eval(self, cfg, model, out: Path):
        from axolotl_tell.evaluate import generation_eval
        from axolotl_tell.generate import write_predictions
        from axolotl_tell.prompting import load_spec

        tokenizer = compat.load_tokenizer(cfg)
        metrics, records = generation_eval(model, tokenizer, load_spec(out), self.prepared.eval_raw,
                                           cfg.tell_eval_generate, max_new_tokens=cfg.get("tell_eval_max_new_tokens") or 64)
        write_predictions(out / EVAL_PREDICTIONS_FILE, records)
        write_json(out / EVAL_METRICS_FILE, metrics)
        LOG.info("[axolotl_tell] task eval (%s, %d rows): %s", cfg.tell_eval_generate, len(records),
                 {k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def _plots(self, cfg, out: Path):
        try:
            import numpy as np

            from axolotl_tell.plots import LOSS_FILE, TIMELINE_FILE, plot_losses, plot_timeline

            order = np.load(self.prepared.path / "plan_order.npy")
            general_rows = self.prepared.report["general"]["rows_available"]
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rows_per_step = int(cfg.micro_batch_size or 1) * int(cfg.gradient_accumulation_steps or 1) * world
            plot_timeline(out / TIMELINE_FILE, np.flatnonzero(order >= general_rows), order.size, rows_per_step)
            if self.trainer is not None:
                plot_losses(out / LOSS_FILE, self.trainer.state.log_history)
        except Exception as err:  # a plot must never fail a finished training run
            LOG.warning("[axolotl_tell] plots skipped: %s", err)


class _GenerateAtEval(TrainerCallback):
    """At each evaluation, on the main rank: generation metrics on the task eval rows -> tell_eval_steps.jsonl.

    Written to a file (and the log), not through the trainer's loggers: those would need every rank.
    """

    def __init__(self, plugin: TellPlugin, cfg):
        self.plugin, self.cfg = plugin, cfg

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is None or not _is_main_process():
            return
        import json

        from axolotl_tell.evaluate import generation_eval
        from axolotl_tell.prompting import load_spec

        out = Path(self.cfg.output_dir)
        metrics, _ = generation_eval(model, compat.load_tokenizer(self.cfg), load_spec(out), self.plugin.prepared.eval_raw,
                                     self.cfg.tell_eval_generate,
                                     max_new_tokens=self.cfg.get("tell_eval_max_new_tokens") or 64)
        record = {"step": state.global_step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}
        with open(out / EVAL_STEPS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        LOG.info("[axolotl_tell] step %d task generation eval: %s", state.global_step, record)


def training_engine(trainer) -> str:
    """What wraps the model and on how many ranks, e.g. ``DeepSpeed ZeRO-3, world size 1`` or ``DDP, world size 2``."""
    state = getattr(getattr(trainer, "accelerator", None), "state", None)
    world = int(getattr(trainer.args, "world_size", 1) or 1)
    if getattr(trainer, "is_deepspeed_enabled", False):
        engine = f"DeepSpeed ZeRO-{getattr(getattr(state, 'deepspeed_plugin', None), 'zero_stage', '?')}"
    elif getattr(trainer, "is_fsdp_enabled", False):
        engine = f"FSDP{getattr(getattr(state, 'fsdp_plugin', None), 'fsdp_version', '')}"
    else:
        engine = "DDP" if world > 1 else "single process"
    return f"{engine}, world size {world}"


def _sharded_parameters(cfg) -> bool:
    """ZeRO-3 or FSDP: no single rank holds the whole model."""
    if cfg.get("fsdp") or cfg.get("fsdp_config"):
        return True
    ds = cfg.get("deepspeed")
    if isinstance(ds, str) and Path(ds).is_file():
        import json

        ds = json.loads(Path(ds).read_text())
    return isinstance(ds, dict) and (ds.get("zero_optimization") or {}).get("stage") == 3


def _concat(parts):
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)
