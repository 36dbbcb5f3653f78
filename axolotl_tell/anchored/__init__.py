"""The TELL dataset strategy: Axolotl's own prompt strategy, with the anchor in each row.

Users can name it directly as a dataset ``type`` (an anchored SFT run, with no
mixing)::

    datasets:
      - {path: task.jsonl, ds_type: json, type: axolotl_tell.anchored.alpaca}
    tell_anchor: "You are ..."

The plugin uses the same class for every ``tell_task_datasets`` entry, so both
paths give identical tokens.
"""

from __future__ import annotations

from functools import partial

from axolotl.prompt_tokenizers import DatasetWrappingStrategy

from axolotl_tell import compat
from axolotl_tell.anchor import (
    COMPLETION,
    Anchor,
    anchor_completion_tokens,
    anchor_raw_row,
    check_anchor_tokens,
    dataset_family,
    resolve_placement,
)
from axolotl_tell.anchor_config import resolve_anchor


def _tokenizer_chat_template(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


class AnchoredDatasetStrategy(DatasetWrappingStrategy):
    """Anchor raw rows, then tokenize them with the strategy of ``inner_type``."""

    def __init__(self, inner_type: str, tokenizer, cfg, ds_cfg, anchor: Anchor | None = None, processor=None):
        self.inner_type = inner_type
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.ds_cfg = ds_cfg
        self.processor = processor
        self.anchor = anchor or resolve_anchor(cfg)
        check_anchor_tokens(self.anchor, tokenizer)  # `type: axolotl_tell.anchored.*` in `datasets:` too
        self.family = dataset_family(inner_type)
        self.placement = resolve_placement(self.anchor, inner_type, _tokenizer_chat_template(tokenizer))

    def inner_ds_cfg(self):
        from axolotl.utils.dict import DictDefault

        return DictDefault({**dict(self.ds_cfg), "type": self.inner_type})

    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs):
        inner_cfg = self.inner_ds_cfg()
        if self.family != COMPLETION:
            dataset = dataset.map(
                partial(anchor_raw_row, anchor=self.anchor, placement=self.placement,
                        ds_type=self.inner_type, ds_cfg=dict(inner_cfg)),
                num_proc=process_count,
                desc="TELL: anchoring task rows",
            )
        tokenized = compat.tokenize_with_axolotl(inner_cfg, self.cfg, self.tokenizer, dataset, self.processor)
        if self.family == COMPLETION:
            anchor_ids = self.tokenizer(self.anchor.text + self.anchor.separator, add_special_tokens=False)["input_ids"]
            tokenized = tokenized.map(
                partial(anchor_completion_tokens, anchor_ids=anchor_ids, bos_token_id=self.tokenizer.bos_token_id),
                desc="TELL: anchoring task rows",
            )
        return tokenized


def make_loader(inner_type: str):
    """An Axolotl strategy ``load`` function for ``type: axolotl_tell.anchored.<inner_type>``."""

    def load(tokenizer, cfg, ds_cfg=None, processor=None):
        return AnchoredDatasetStrategy(inner_type, tokenizer, cfg, ds_cfg or {}, processor=processor)

    return load
