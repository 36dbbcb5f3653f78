"""TellPlugin: each Axolotl hook hands off to one module."""

from __future__ import annotations

import logging
import os

from axolotl.integrations.base import BasePlugin

from axolotl_tell import compat
from axolotl_tell.args import tell_enabled
from axolotl_tell.prepare import SOURCE_COLUMN, load_general, prepare_tell_datasets
from axolotl_tell.report import format_table, write_outputs

LOG = logging.getLogger("axolotl.tell")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class TellPlugin(BasePlugin):
    """Token-Efficient Leverage Learning: anchored task data spread through general data."""

    def __init__(self):
        super().__init__()
        self.report: dict | None = None

    def get_input_args(self) -> str:
        return "axolotl_tell.args.TellArgs"

    def register(self, cfg: dict):
        compat.check_axolotl_version()

    def load_datasets(self, cfg, preprocess: bool = False):
        if not tell_enabled(cfg):
            return None  # plain Axolotl loading (anchored `type:`s still work there)
        tokenizer = compat.load_tokenizer(cfg)
        prepared = prepare_tell_datasets(cfg, tokenizer)
        self.report = prepared.report
        if _is_main_process():
            write_outputs(cfg.output_dir, prepared.report, cfg)
            LOG.info("\n%s", format_table(prepared.report))
        train = prepared.train_dataset.remove_columns(SOURCE_COLUMN)
        eval_dataset = None
        if cfg.test_datasets:
            eval_dataset, _ = load_general(cfg, tokenizer, cfg.test_datasets, split="test")
            eval_dataset = compat.drop_long_rows(eval_dataset, cfg).remove_columns(SOURCE_COLUMN)
        if preprocess or os.environ.get("AXOLOTL_IS_PREPROCESS") == "1":
            return compat.train_dataset_meta(train, eval_dataset, -1)
        return compat.train_dataset_meta(train, eval_dataset, compat.total_num_steps(cfg, train))

    def post_train(self, cfg, model):
        # Axolotl calls this more than once; writing the same files again is harmless.
        if self.report is not None and _is_main_process():
            write_outputs(cfg.output_dir, self.report, cfg)
