"""The anchor prompt and how it enters one raw task row (which anchor a config asks for: ``anchor_config``).

The anchor goes into the *raw* row, in the dataset's own prompt format, before
Axolotl's prompt strategy tokenizes it; so it is prompt text (label -100) and
the strategy's own template does the rest. Three dataset families:

* instruction (``alpaca`` and its variants: rows with an ``instruction``):
  ``prefix`` puts ``anchor + separator`` before the instruction; ``system``
  (only types with a per-row ``system`` field, e.g. ``alpaca_w_system``) sets
  the row's system text.
* messages (``chat_template``): ``system`` adds a system turn (or prefixes an
  existing one); ``prefix`` prefixes the first user turn.
* completion: raw text has no prompt segment, so the anchor becomes its own
  masked segment: see :func:`anchor_completion_tokens`.

No Axolotl import here: the functions take plain dicts.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

DEFAULT_SEPARATOR = "\n\n"  # between the anchor and the text it prefixes (`tell_anchor_separator`)


class AnchorError(ValueError):
    """The anchor cannot be applied to this dataset type or row."""


@dataclass(frozen=True)
class Anchor:
    text: str
    placement: str = "auto"  # as requested: auto | system | prefix
    separator: str = DEFAULT_SEPARATOR
    source: str = "config"  # config | file | auto
    meta: dict | None = field(default=None, compare=False, hash=False)  # how an auto anchor was made

    def to_dict(self) -> dict:
        return asdict(self)


ANCHOR_KEYS = {"config": "tell_anchor", "file": "tell_anchor_file", "auto": "tell_anchor"}  # by Anchor.source


def special_tokens_in(text: str, tokenizer) -> list[str]:
    """The tokenizer's special tokens (named ones and added tokens marked special) that occur in ``text``."""
    specials = set(getattr(tokenizer, "all_special_tokens", None) or [])
    specials.update(t.content for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
                    if getattr(t, "special", False))
    return sorted(t for t in specials if t and t in text)


def check_anchor_tokens(anchor: Anchor, tokenizer) -> None:
    """Refuse an anchor holding a special token's text: it would be tokenized as that token (e.g. end the turn)."""
    found = special_tokens_in(anchor.text, tokenizer)
    if found:
        raise AnchorError(
            f"[axolotl_tell] `{ANCHOR_KEYS.get(anchor.source, 'tell_anchor')}`: the anchor contains the tokenizer's "
            f"special token {', '.join(repr(t) for t in found)}, which becomes that one control token (e.g. the end "
            "of the turn), not text. Fix: remove it from the anchor, or write it so it is not the token's exact text "
            f"(e.g. {_defused(found[0])!r}, or say it in words)."
        )


def _defused(token: str) -> str:
    """``<|im_end|>`` -> ``<| im_end |>``: the same meaning to a reader, plain text to the tokenizer."""
    inner = token.strip("<>|[]")
    return token.replace(inner, f" {inner} ", 1) if inner and inner != token else f"{token[:1]} {token[1:]}"


def rows_holding_anchor(rows, anchor_text: str) -> int:
    """How many raw rows already hold the anchor text in one of their string fields (nested ones included)."""
    def holds(value) -> bool:
        if isinstance(value, str):
            return anchor_text in value
        if isinstance(value, dict):
            return any(holds(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return any(holds(v) for v in value)
        return False

    return sum(1 for row in rows if holds(row))


INSTRUCTION, MESSAGES, COMPLETION = "instruction", "messages", "completion"


def dataset_family(ds_type: str) -> str:
    """Which anchoring rule a dataset ``type`` follows."""
    base = str(ds_type).split(":")[0].split(".")[-1] if ds_type else ""
    if base.startswith("alpaca"):
        return INSTRUCTION
    if base in ("chat_template", "messages"):
        return MESSAGES
    if base == "completion":
        return COMPLETION
    raise AnchorError(
        f"[axolotl_tell] dataset type {ds_type!r} is not supported for task data. "
        "Fix: use an alpaca-style type (alpaca, alpaca_w_system, alpaca_chat, ...), chat_template, or completion."
    )


def _has_system_field(ds_type: str) -> bool:
    return str(ds_type).split(":")[0].endswith("_w_system")


def resolve_placement(anchor: Anchor, ds_type: str, chat_template: str | None = None) -> str:
    """The placement actually used for a dataset type: ``system``, ``prefix`` or ``segment``."""
    family = dataset_family(ds_type)
    if family == COMPLETION:
        if anchor.placement == "system":
            raise AnchorError("[axolotl_tell] `tell_anchor_placement: system` does not fit `type: completion` "
                              "(raw text has no system turn). Fix: use auto or prefix.")
        return "segment"
    if family == INSTRUCTION:
        if anchor.placement == "system" and not _has_system_field(ds_type):
            raise AnchorError(f"[axolotl_tell] `tell_anchor_placement: system` needs a per-row system field, "
                              f"which `type: {ds_type}` has not. Fix: use auto or prefix, or `alpaca_w_system`.")
        if anchor.placement == "auto":
            return "system" if _has_system_field(ds_type) else "prefix"
        return anchor.placement
    # messages: a system turn where the chat template renders one
    if anchor.placement == "auto":
        return "system" if chat_template is None or "system" in chat_template else "prefix"
    return anchor.placement


def _joined(anchor: Anchor, text) -> str:
    text = "" if text is None else str(text)
    return anchor.text + anchor.separator + text if text else anchor.text


def anchor_instruction_row(row: dict, anchor: Anchor, placement: str) -> dict:
    out = dict(row)
    if placement == "system":
        out["system"] = _joined(anchor, row.get("system"))
    else:
        if "instruction" not in row:
            raise AnchorError("[axolotl_tell] an instruction-style task row has no `instruction` field. "
                              f"Fix: check the dataset type; row keys are {sorted(row)}.")
        out["instruction"] = _joined(anchor, row.get("instruction"))
    return out


def anchor_messages_row(row: dict, anchor: Anchor, placement: str, ds_cfg: dict) -> dict:
    """Add the anchor to a conversation, honouring the dataset's field and role mappings."""
    field = ds_cfg.get("field_messages") or "messages"
    mapping = ds_cfg.get("message_property_mappings") or {}
    role_key, content_key = mapping.get("role", "role"), mapping.get("content", "content")
    raw_roles = ds_cfg.get("roles") or {}
    # raw role names that map to a canonical role; Axolotl's defaults otherwise
    def raw_names(canonical: str, defaults: tuple) -> tuple:
        return tuple(raw_roles.get(canonical) or defaults)

    system_names = raw_names("system", ("system",))
    user_names = raw_names("user", ("user", "human"))
    messages = row.get(field)
    if not isinstance(messages, list) or not messages:
        raise AnchorError(f"[axolotl_tell] a chat task row has no messages in field `{field}`. "
                          "Fix: set `field_messages` for the task dataset, or remove rows without messages.")
    messages = copy.deepcopy(messages)
    if placement == "system":
        first = messages[0]
        if isinstance(first, dict) and first.get(role_key) in system_names:
            first[content_key] = _joined(anchor, first.get(content_key))
        else:
            messages.insert(0, {role_key: system_names[0], content_key: anchor.text})
    else:
        for msg in messages:
            if isinstance(msg, dict) and msg.get(role_key) in user_names:
                msg[content_key] = _joined(anchor, msg.get(content_key))
                break
        else:
            raise AnchorError("[axolotl_tell] a chat task row has no user turn to prefix. "
                              "Fix: use `tell_anchor_placement: system`.")
    out = dict(row)
    out[field] = messages
    return out


def anchor_raw_row(row: dict, anchor: Anchor, placement: str, ds_type: str, ds_cfg: dict) -> dict:
    """One raw task row with the anchor in it (instruction and messages families)."""
    family = dataset_family(ds_type)
    if family == INSTRUCTION:
        return anchor_instruction_row(row, anchor, placement)
    if family == MESSAGES:
        return anchor_messages_row(row, anchor, placement, ds_cfg)
    raise AnchorError(f"[axolotl_tell] raw anchoring does not apply to {ds_type!r}")


def anchor_completion_tokens(
    tokenized: dict, anchor_ids: list[int], bos_token_id: int | None
) -> dict:
    """Join a masked anchor segment before a tokenized completion row.

    ``anchor_ids`` is ``anchor + separator`` tokenized on its own without
    special tokens; it goes after a leading BOS (if any), with label -100.
    """
    ids = list(tokenized["input_ids"])
    labels = list(tokenized.get("labels", ids))
    at = 1 if ids and bos_token_id is not None and ids[0] == bos_token_id else 0
    out = dict(tokenized)
    out["input_ids"] = ids[:at] + list(anchor_ids) + ids[at:]
    out["labels"] = labels[:at] + [-100] * len(anchor_ids) + labels[at:]
    if "attention_mask" in tokenized:
        mask = list(tokenized["attention_mask"])
        out["attention_mask"] = mask[:at] + [1] * len(anchor_ids) + mask[at:]
    return out
