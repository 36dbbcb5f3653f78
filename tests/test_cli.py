"""`axolotl-tell preview | infer | bake` on the tiny model (in-process: the CLI's own `main`)."""

from __future__ import annotations

import json
import re

import pytest
from tiny import make_workspace

from axolotl_tell import cli
from axolotl_tell.prepare import SOURCE_COLUMN


@pytest.fixture()
def workspace(tiny_model, tmp_path):
    path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template")
    return path, cfg


def test_preview_prints_the_mix_marks_the_anchor_and_plots(workspace, capsys):
    path, cfg = workspace
    assert cli.main(["preview", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TELL mix" in out and "achieved" in out
    assert f"«ANCHOR»{cfg['tell_anchor']}«/ANCHOR»" in out
    assert "first task row" in out and "first general row" in out
    from pathlib import Path

    assert (Path(cfg["output_dir"]) / "tell_timeline.png").stat().st_size > 1000
    assert json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["task"]["rows"] == 10


def test_infer_show_prompt_reproduces_the_training_prompt_token_for_token(workspace, capsys):
    from datasets import load_from_disk

    path, cfg = workspace
    cli.main(["preview", str(path)])
    capsys.readouterr()
    task_file = cfg["tell_task_datasets"][0]["path"]
    first = json.loads(open(task_file).readline())
    user_text = first["messages"][0]["content"]
    assert cli.main(["infer", str(path), "--prompt", user_text, "--show-prompt", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    ids = json.loads(re.search(r"=== \d+ tokens: (\[.*\])", out).group(1))
    report = json.loads(open(f"{cfg['output_dir']}/tell_report.json").read())
    train = load_from_disk(report["prepared_path"] + "/train")
    task_rows = [r for r in train if r[SOURCE_COLUMN] == 1]
    matches = [r for r in task_rows if r["input_ids"][: len(ids)] == ids]
    assert matches, "the inference prompt is not a prefix of any training row"
    row = matches[0]
    assert next(i for i, v in enumerate(row["labels"]) if v != -100) == len(ids)  # ends where the answer starts
    assert cfg["tell_anchor"] in out


def test_bake_makes_the_anchor_the_default_system_turn(workspace, capsys):
    from pathlib import Path

    from transformers import AutoTokenizer

    path, cfg = workspace
    cli.main(["preview", str(path)])
    out = Path(cfg["output_dir"])
    AutoTokenizer.from_pretrained(cfg["base_model"]).save_pretrained(out)  # what training leaves there
    assert cli.main(["bake", str(path)]) == 0
    assert cli.main(["bake", str(path)]) == 0  # idempotent
    tok = AutoTokenizer.from_pretrained(out)
    user = [{"role": "user", "content": "the cat sat"}]
    text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text.startswith(f"<|im_start|>system\n{cfg['tell_anchor']}<|im_end|>\n<|im_start|>user\nthe cat sat")
    assert text.count(cfg["tell_anchor"]) == 1
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False)
    assert cfg["tell_anchor"] not in own and "Be brief." in own


def test_bake_refuses_prefix_placement(tiny_model, tmp_path):
    path, cfg = make_workspace(tmp_path, tiny_model, task="alpaca")
    cli.main(["preview", str(path)])
    with pytest.raises(ValueError, match="placed as"):
        cli.main(["bake", str(path)])


TRICKY_ANCHOR = ('Answer with an emoji 😀 or 𝔘, a "quote", it\'s a back\\slash \\n (not a newline), a real\nnewline, '
                 '{{ not_a_variable }}, {% if x %}not a tag{% endif %}, {# not a comment #} and -%} too.')


def test_bake_keeps_any_anchor_text_verbatim(tiny_model, tmp_path):
    """Non-BMP characters, quotes, backslashes, newlines and Jinja syntax in the anchor reach the prompt as written."""
    from transformers import AutoTokenizer

    from axolotl_tell.bake import bake_anchor

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path)
    spec = {"anchor": {"text": TRICKY_ANCHOR}, "task_datasets": [{"type": "chat_template", "placement": "system"}]}
    bake_anchor(tmp_path, spec)
    bake_anchor(tmp_path, spec)  # re-baking keeps one preamble
    tok = AutoTokenizer.from_pretrained(tmp_path)
    user = [{"role": "user", "content": "the cat sat"}]
    text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{TRICKY_ANCHOR}<|im_end|>\n<|im_start|>user\nthe cat sat<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True)  # tokenizes, no lone surrogates
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False)
    assert TRICKY_ANCHOR not in own and "Be brief." in own
