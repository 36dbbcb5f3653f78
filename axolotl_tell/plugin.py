"""TellPlugin: each Axolotl hook hands off to one module."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from axolotl.integrations.base import BasePlugin

from axolotl_tell import compat, ranks
from axolotl_tell.args import tell_enabled
from axolotl_tell.prepare import SOURCE_COLUMN, PreparedTell, load_general, prepare_tell_datasets
from axolotl_tell.report import format_table, inference_spec, write_dry_run_report, write_json, REPORT_FILE

LOG = logging.getLogger("axolotl.tell")

POST_TRAIN_CALL_AFTER_SAVE = compat.POST_TRAIN_CALL_AFTER_SAVE


_is_main_process = ranks.is_main_process
_is_local_main_process = ranks.is_local_main_process


class TellPlugin(BasePlugin):
    """Token-Efficient Leverage Learning: anchored task data spread through general data."""

    def __init__(self):
        super().__init__()
        self.prepared: PreparedTell | None = None
        self.spec: dict | None = None  # the inference spec (tell.json) of this run, written after the save
        self.source_kinds: dict[int, str] = {}
        self.trainer = None
        self.meter = None
        self.meter_replicas = 1
        self.steps_planned: int | None = None
        self.micro_batches_per_rank: int | None = None  # what each rank's train dataloader yields
        self.train_schedule: list[list[int]] | None = None  # packed: the rows of each global micro-batch
        self.trained: dict | None = None  # measured at the end of training, on every rank
        self.evaluations: list[dict] = []  # tell_keep_best: the metric at each evaluation, in step order
        self.kept: dict | None = None  # the checkpoint the trainer loaded at the end (load_best_model_at_end)
        self.floor: dict | None = None  # tell_keep_best: the eval rows' one-answer floor, where it counts
        self.post_train_calls = 0

    def get_input_args(self) -> str:
        return "axolotl_tell.args.TellArgs"

    def register(self, cfg: dict):
        compat.check_axolotl_version()

    def load_datasets(self, cfg, preprocess: bool = False):
        if not tell_enabled(cfg):
            return None  # plain Axolotl loading (anchored `type:`s still work there)
        tokenizer = compat.load_tokenizer(cfg)
        self.prepared = prepared = prepare_tell_datasets(cfg, tokenizer)
        self.spec = inference_spec(prepared.report, cfg)
        dry_run = preprocess or os.environ.get("AXOLOTL_IS_PREPROCESS") == "1"
        # one writer per node (its local rank 0): a node-local output_dir needs the file too; nodes sharing one
        # write the same report at once, safely (write_json: per-writer temp file, atomic rename, last one wins)
        if _is_local_main_process():
            if dry_run:  # never touches the files of a trained run in output_dir
                write_dry_run_report(cfg.output_dir, prepared)
            else:
                write_json(Path(cfg.output_dir) / REPORT_FILE, prepared.report)
        if _is_main_process():
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
        if dry_run:
            return compat.train_dataset_meta(train, eval_dataset, -1)
        if cfg.sample_packing and ranks.world_size() > 1 and _is_main_process():
            LOG.warning("[axolotl_tell] packed multi-GPU run: Axolotl's packer drops the last (packs mod world size) "
                        "packs, so the last few planned rows may not be trained (see README, Multi-GPU and resume).")
        # an estimate for Axolotl's warmup and logging; the exact step count is set from the dataloader later
        return compat.train_dataset_meta(train, eval_dataset, compat.total_num_steps(cfg, train))

    def get_training_args(self, cfg):
        from axolotl_tell.cpu_precision import cpu_bf16_training_args
        from axolotl_tell.keep_best import keep_best_training_args

        args = {**(cpu_bf16_training_args(cfg) or {}),
                **((keep_best_training_args(cfg) if tell_enabled(cfg) else None) or {})}
        return args or None

    def post_trainer_create(self, cfg, trainer):
        if self.prepared is None:
            return
        from axolotl_tell.training import prepare_trainer

        prepare_trainer(self, cfg, trainer)

    def post_train(self, cfg, model):
        if self.prepared is None:
            return
        self.post_train_calls += 1
        if self.post_train_calls != POST_TRAIN_CALL_AFTER_SAVE or not _is_local_main_process():
            return
        from axolotl_tell.run_end import finish_run

        finish_run(self, cfg, model, main=_is_main_process())

    def post_lora_merge(self, cfg, adapter_path, output_path):
        # axolotl >= 0.21 calls this after `axolotl merge-lora`; on 0.19 run `axolotl-tell bake CONFIG --into DIR`
        if cfg.get("tell_bake_anchor") and tell_enabled(cfg) and _is_main_process():
            from axolotl_tell.run_end import bake_into

            bake_into(Path(output_path), spec_dir=Path(cfg.output_dir))


def _concat(parts):
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)
