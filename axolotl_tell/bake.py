"""Bake the anchor into a saved chat template, so serving stacks (vLLM, transformers pipelines) apply it.

The saved template gains a short preamble: when a conversation has no system turn, the anchor becomes its
system turn. A conversation that brings its own system turn is rendered as before. Only for the ``system``
placement: that is exactly what training did.
"""

from __future__ import annotations

MARK = "{#- axolotl_tell: anchor baked as the default system turn -#}"


def jinja_string_literal(text: str) -> str:
    r"""A one-line Jinja string literal that Jinja reads back as exactly ``text``.

    Jinja decodes a string literal with Python's ``unicode-escape`` codec, so the literal is written with its
    inverse: ``\\``, ``\n``, ``\xe9``, ``\U0001f600``, and ``\"`` for the quote. (``json.dumps`` wrote an emoji
    as the surrogate pair ``\ud83d\ude00``, which Jinja decoded into two lone surrogates that no tokenizer can
    encode.) Jinja syntax inside the literal (``{{``, ``%}``) is plain text there.
    """
    return '"' + text.encode("unicode-escape").decode("ascii").replace('"', '\\"') + '"'


def baked_template(template: str, anchor: str) -> str:
    """``template`` with the anchor as the default system turn (idempotent)."""
    if template.startswith(MARK):
        template = template.split("\n", 2)[2]  # re-bake: drop the previous preamble
    preamble = (
        "{%- if messages and messages[0]['role'] != 'system' -%}"
        "{%- set messages = [{'role': 'system', 'content': " + jinja_string_literal(anchor) + "}] + messages -%}"
        "{%- endif -%}"
    )
    return f"{MARK}\n{preamble}\n{template}"


class BakeError(ValueError):
    """The anchor cannot be baked into that folder's chat template."""


def bake_anchor(folder, spec: dict) -> str:
    """Rewrite the chat template saved in ``folder`` (an adapter or a merged model); returns the new template."""
    from transformers import AutoTokenizer

    placements = {entry.get("placement") for entry in spec["task_datasets"]}
    if placements != {"system"}:
        raise BakeError(f"[axolotl_tell] `tell_bake_anchor`: the anchor was placed as {sorted(placements)}, "
                        "not as a system turn. Fix: bake only chat_template task data with placement system.")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not isinstance(tokenizer.chat_template, str):
        raise BakeError(f"[axolotl_tell] `tell_bake_anchor`: no chat template saved in {folder}. Fix: point "
                        "`--into` at a folder with the trained tokenizer (the output_dir or the merged model).")
    tokenizer.chat_template = baked_template(tokenizer.chat_template, spec["anchor"]["text"])
    tokenizer.save_pretrained(folder)
    return tokenizer.chat_template
