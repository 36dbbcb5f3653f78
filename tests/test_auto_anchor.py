"""`tell_anchor: auto`: examples, clean-up, validation, determinism, caching, config errors, CLI (tiny model)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from tiny import make_workspace, task_alpaca_rows

from axolotl_tell import auto_anchor
from axolotl_tell.anchor import AnchorError
from axolotl_tell.anchor_config import resolve_anchor
from axolotl_tell.auto_anchor import (
    DEFAULT_TEMPLATE,
    AutoAnchorError,
    AutoSettings,
    clean_anchor,
    collect_examples,
    copied_answer,
    render_prompt,
    validate_anchor,
)

GOOD = "You turn a statement into a yes/no question that keeps its words."


def _words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- clean-up and validation (no model)


@pytest.mark.parametrize("raw,clean", [
    ("  You rewrite it.  ", "You rewrite it."),
    ('"You rewrite it."', "You rewrite it."),
    ("\u201cYou rewrite it.\u201d", "You rewrite it."),
    ("`'You rewrite it.'`", "You rewrite it."),
    ("Task description: You rewrite\n  the statement.", "You rewrite the statement."),
    ("You rewrite it.\n\nExample 1\nInput: ...", "You rewrite it."),
    ("\n\n  \n", ""),
    ('"', '"'),
])
def test_clean_anchor(raw, clean):
    assert clean_anchor(raw) == clean


def test_validation_accepts_a_good_anchor():
    assert validate_anchor(GOOD, answers=["has the girl used my notebook"], max_tokens=20, count_tokens=_words) == GOOD


@pytest.mark.parametrize("text,answers,budget,problem", [
    ("", [], 10, "is empty"),
    ("   ", [], 10, "is empty"),
    ("...", [], 10, "is empty"),
    ("one two three four five six", [], 5, r"has 6 tokens, more than `tell_anchor_max_tokens` \(5\)"),
    ("You answer like: Has the girl used my notebook?", ["has the girl used my notebook"], 50, "copies the answer"),
    ("You write IS IT TRUE THAT the cat sat", ["Is it true that the cat sat?"], 50, "copies the answer"),
])
def test_validation_rejects_with_a_fix(text, answers, budget, problem):
    with pytest.raises(AutoAnchorError) as info:
        validate_anchor(text, answers=answers, max_tokens=budget, count_tokens=_words)
    message = str(info.value)
    assert re.search(problem, message), message
    assert "`tell_anchor: auto`" in message and "Fix:" in message and "tell_anchor_template" in message


def test_copied_answer_rule_is_precise():
    # at the limit: exactly MIN_ANSWER_WORDS words count; fewer never do
    assert auto_anchor.MIN_ANSWER_WORDS == 3
    assert copied_answer("Answer yes or no.", ["yes", "or no"]) is None
    assert copied_answer("Say the cat sat, then stop.", ["the cat sat"]) == "the cat sat"
    # word boundaries: a longer word is not a copy
    assert copied_answer("You say the cat sated.", ["the cat sat"]) is None
    assert copied_answer("You see thethe cat sat.", ["the cat sat"]) is None
    # case and punctuation are ignored
    assert copied_answer("YOU: The-Cat, sat!", ["the cat sat"]) == "the cat sat"


def test_validation_is_the_token_budget_of_the_counter():
    assert validate_anchor("a b c", answers=[], max_tokens=3, count_tokens=_words) == "a b c"
    with pytest.raises(AutoAnchorError):
        validate_anchor("a b c d", answers=[], max_tokens=3, count_tokens=_words)


# ---------------------------------------------------------------- examples and prompt (no model)


def _alpaca(n=10):
    return [({"type": "alpaca"}, task_alpaca_rows(n))]


def test_example_choice_is_seeded_and_in_data_order():
    a, answers = collect_examples(_alpaca(), 4, seed=7)
    b, _ = collect_examples(_alpaca(), 4, seed=7)
    c, _ = collect_examples(_alpaca(), 4, seed=8)
    assert a == b and [e.row for e in a] != [e.row for e in c]
    assert [e.row for e in a] == sorted(e.row for e in a) and len(a) == 4
    assert len(answers) == 10  # every task row's answer is checked, not only the shown ones
    everything, _ = collect_examples(_alpaca(3), 8, seed=7)
    assert [e.row for e in everything] == [0, 1, 2]


def test_examples_are_rendered_per_dataset_family():
    rows = task_alpaca_rows(1)
    (alpaca,), answers = collect_examples([({"type": "alpaca"}, rows)], 1, 0)
    assert alpaca.text == f"Input: {rows[0]['instruction']}\n{rows[0]['input']}\nOutput: {rows[0]['output']}"
    assert answers == [rows[0]["output"]]
    chat_cfg = {"type": "chat_template", "field_messages": "conv", "message_property_mappings":
                {"role": "from", "content": "value"}, "roles": {"user": ["me"], "assistant": ["bot"]}}
    chat_row = {"conv": [{"from": "system", "value": "S"}, {"from": "me", "value": "Q"}, {"from": "bot", "value": "A1"},
                         {"from": "me", "value": "Q2"}, {"from": "bot", "value": "A2"}]}
    (chat,), answers = collect_examples([(chat_cfg, [chat_row])], 1, 0)
    assert chat.text == "System: S\nUser: Q\nAssistant: A1\nUser: Q2\nAssistant: A2"
    assert answers == ["A1", "A2"]
    (completion,), answers = collect_examples([({"type": "completion"}, [{"text": "Once upon a time."}])], 1, 0)
    assert completion.text == "Text: Once upon a time." and answers == ["Once upon a time."]
    (cut,), _ = collect_examples([({"type": "completion"}, [{"text": "x" * 5000}])], 1, 0)
    assert len(cut.text) == len("Text: ") + auto_anchor.MAX_FIELD_CHARS + 1 and cut.text.endswith("…")


def test_examples_pool_all_task_datasets():
    data = [({"type": "alpaca"}, task_alpaca_rows(2)), ({"type": "completion"}, [{"text": "t1"}, {"text": "t2"}])]
    examples, answers = collect_examples(data, 8, 0)
    assert [(e.dataset, e.row) for e in examples] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(answers) == 4


def test_prompt_fills_examples_and_k_and_keeps_other_braces():
    examples, _ = collect_examples(_alpaca(), 2, 0)
    prompt = render_prompt('Reply as JSON {"task": ...}. {k} examples:\n{examples}', examples)
    assert prompt.startswith('Reply as JSON {"task": ...}. 2 examples:\nExample 1\nInput: ')
    assert "\n\nExample 2\nInput: " in prompt and "{examples}" not in prompt
    assert "{examples}" in DEFAULT_TEMPLATE and "{examples}" in auto_anchor.__doc__
    # the documented default template is the one in use
    doc = auto_anchor.__doc__.split("Default template::")[1]
    assert " ".join(DEFAULT_TEMPLATE.split()) == " ".join(doc.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert DEFAULT_TEMPLATE in readme


def test_auto_without_task_rows_is_an_error():
    with pytest.raises(AnchorError, match="tell_anchor: auto.*Fix:"):
        resolve_anchor({"tell_anchor": "auto"})


# ---------------------------------------------------------------- tiny model: real generation


def _settings(model: Path, root: Path, **kw) -> AutoSettings:
    return AutoSettings(model=str(model), tokenizer=str(model), revision=None, k=kw.get("k", 4),
                        seed=kw.get("seed", 7), template=kw.get("template", DEFAULT_TEMPLATE),
                        max_tokens=kw.get("max_tokens", 24), cache_root=root)


def test_generation_is_greedy_and_deterministic(tiny_model, tmp_path):
    examples, _ = collect_examples(_alpaca(), 4, 7)
    prompt = render_prompt(DEFAULT_TEMPLATE, examples)
    first = auto_anchor.generate_text(_settings(tiny_model, tmp_path), prompt)
    again = auto_anchor.generate_text(_settings(tiny_model, tmp_path), prompt)
    assert first["raw"] == again["raw"]
    assert first["device"] == "cpu" and first["dtype"] == "float32"
    # the tokenizer has a chat template: the prompt is one user turn plus the generation prompt
    ids = auto_anchor.prompt_token_ids(first["tokenizer"], prompt)
    assert first["tokenizer"].decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_full_generation_gives_the_same_outcome_twice(tiny_model, tmp_path):
    """A random tiny model writes garbage: the outcome (anchor or rejection) must still be reproducible."""
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault({"tell_anchor": "auto", "base_model": str(tiny_model), "seed": 7,
                       "tell_anchor_max_tokens": 24, "dataset_prepared_path": str(tmp_path)})

    def outcome():
        try:
            return auto_anchor.generate_anchor(cfg, _alpaca(), use_cache=False).anchor.text
        except AutoAnchorError as err:
            return str(err)

    assert outcome() == outcome()


# ---------------------------------------------------------------- caching through prepare (generation faked)


@pytest.fixture
def fake_generation(monkeypatch):
    """Replace only the model call: returns `text`, counts calls, records prompts."""
    from transformers import AutoTokenizer

    state = {"calls": 0, "text": GOOD, "prompts": []}

    def fake(settings, prompt):
        state["calls"] += 1
        state["prompts"].append(prompt)
        raw = state["text"] + ("\n\nExample 9\n..." if state["text"] else "")  # clean-up keeps paragraph 1
        return {"raw": raw, "tokenizer": AutoTokenizer.from_pretrained(settings.tokenizer),
                "device": "cpu", "dtype": "float32", "prompt_tokens": 0}

    monkeypatch.setattr(auto_anchor, "generate_text", fake)
    return state


@pytest.fixture(scope="module")
def load_cfg():
    from axolotl.cli.config import load_cfg

    return load_cfg


def _prepare(load_cfg, root: Path, model: Path, **kw):
    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets

    path, _ = make_workspace(root, model, **{"tell_anchor": "auto", "tell_anchor_examples": 4, **kw})
    cfg = load_cfg(str(path))
    tokenizer = compat.load_tokenizer(cfg)
    return cfg, tokenizer, prepare_tell_datasets(cfg, tokenizer)


def test_auto_anchor_is_generated_once_then_reused(load_cfg, tiny_model, tmp_path, fake_generation):
    from axolotl_tell.prepare import SOURCE_COLUMN
    from axolotl_tell.report import inference_spec

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    cfg, tok, first = _prepare(load_cfg, tmp_path, model)
    assert fake_generation["calls"] == 1 and not first.from_cache
    anchor = first.report["anchor"]
    assert anchor["text"] == GOOD and anchor["source"] == "auto"
    assert anchor["auto"]["model"] == str(model) and anchor["auto"]["examples"] == 4 and anchor["auto"]["seed"] == 7
    assert fake_generation["prompts"][0].count("Example ") == 4
    # the generated anchor is the prompt of every task row
    task_rows = [r for r in first.train_dataset if r[SOURCE_COLUMN] == 1]
    assert task_rows and all(GOOD in tok.decode(r["input_ids"]) for r in task_rows)
    # what the report and the inference spec (tell.json) will say
    for saved in (first.report["anchor"], inference_spec(first.report, cfg)["anchor"]):
        assert (saved["text"], saved["source"]) == (GOOD, "auto")
    cached = list((tmp_path / "prepared").glob("tell-anchor-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["anchor"] == GOOD

    # next run: the anchor comes from the prepared data, and so does the mix
    fake_generation["text"] = "You would get a different anchor now."
    _, _, again = _prepare(load_cfg, tmp_path, model)
    assert fake_generation["calls"] == 1
    assert again.from_cache and again.path == first.path and again.report["anchor"]["text"] == GOOD

    # other examples (k), other task data, or another model: generated again
    _, _, other_k = _prepare(load_cfg, tmp_path, model, tell_anchor_examples=5)
    assert fake_generation["calls"] == 2 and other_k.report["anchor"]["text"] == fake_generation["text"]
    assert not other_k.from_cache and other_k.path != first.path
    _, _, other_seed = _prepare(load_cfg, tmp_path, model, seed=8)
    assert fake_generation["calls"] == 3
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    _prepare(load_cfg, tmp_path, model)
    assert fake_generation["calls"] == 4
    _prepare(load_cfg, tmp_path, model)
    assert fake_generation["calls"] == 4
    # edited task data (same path; make_workspace would rewrite it, so load the config directly)
    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets

    (tmp_path / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in task_alpaca_rows(10, seed=2)))
    cfg = load_cfg(str(tmp_path / "config.yml"))
    prepare_tell_datasets(cfg, compat.load_tokenizer(cfg))
    assert fake_generation["calls"] == 5
    assert len(list((tmp_path / "prepared").glob("tell-anchor-*.json"))) == fake_generation["calls"]


def test_a_rejected_anchor_stops_before_the_mix_and_is_not_cached(load_cfg, tiny_model, tmp_path, fake_generation):
    answer = task_alpaca_rows(10)[3]["output"]
    fake_generation["text"] = f"You answer like this: {answer}"
    with pytest.raises(AutoAnchorError, match=r"copies the answer.*Fix: write the anchor by hand"):
        _prepare(load_cfg, tmp_path, tiny_model)
    prepared = tmp_path / "prepared"
    assert not list(prepared.glob("tell-anchor-*.json")) and not [p for p in prepared.iterdir() if p.is_dir()]


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize("overrides,key", [
    ({"tell_anchor_examples": 0}, "tell_anchor_examples"),
    ({"tell_anchor_examples": "eight"}, "tell_anchor_examples"),
    ({"tell_anchor_template": "Describe the task."}, "tell_anchor_template"),
    ({"tell_anchor_max_tokens": 0}, "tell_anchor_max_tokens"),
    ({"tell_anchor_model": ""}, "tell_anchor_model"),
    ({"tell_anchor": "You do X.", "tell_anchor_examples": 4}, "tell_anchor_examples"),
], ids=["k0", "k-word", "template", "budget0", "model-empty", "key-without-auto"])
def test_bad_auto_keys_fail_fast(load_cfg, tiny_model, tmp_path, overrides, key):
    path, cfg = make_workspace(tmp_path, tiny_model, tell_anchor="auto")
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(Exception) as info:
        load_cfg(str(path))
    message = str(info.value)
    assert f"`{key}`" in message and "Fix:" in message, message


# ---------------------------------------------------------------- CLI


def test_cli_anchor_prints_generates_and_reuses(tiny_model, tmp_path, fake_generation, capsys):
    from axolotl_tell.cli import main

    path, cfg = make_workspace(tmp_path, tiny_model, tell_anchor="auto")
    assert main(["anchor", str(path)]) == 0
    out = capsys.readouterr().out
    assert GOOD in out and "source: auto; generated" in out and fake_generation["calls"] == 1
    assert main(["anchor", str(path), "--show-prompt"]) == 0
    out = capsys.readouterr().out
    assert "source: auto; reused" in out and "=== generation prompt ===" in out and fake_generation["calls"] == 1
    assert main(["anchor", str(path), "--regenerate"]) == 0
    assert fake_generation["calls"] == 2
    assert not (tmp_path / "out").exists()  # nothing trained, no outputs written

    fake_generation["text"] = ""
    assert main(["anchor", str(path), "--regenerate"]) == 2
    assert "is empty" in capsys.readouterr().err

    cfg["tell_anchor"] = "You do the task."
    path.write_text(yaml.safe_dump(cfg))
    assert main(["anchor", str(path)]) == 0
    assert "anchor (source: config):\n\nYou do the task." in capsys.readouterr().out


def _new_token_ids(monkeypatch, run) -> list[int]:
    """The token ids ``run()`` generated (spying on the model's ``generate``)."""
    from transformers import LlamaForCausalLM

    seen, original = [], LlamaForCausalLM.generate

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(out[0, kwargs["input_ids"].shape[1]:].tolist())
        return out

    monkeypatch.setattr(LlamaForCausalLM, "generate", spy)
    run()
    monkeypatch.setattr(LlamaForCausalLM, "generate", original)
    return seen[0]


def _repeated_4grams(ids: list[int]) -> int:
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    return len(grams) - len(set(grams))


def test_anchor_generation_never_repeats_a_4gram(tiny_model, tmp_path, monkeypatch):
    """Small models loop on a phrase until the budget runs out; the anchor's decoding forbids that."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_tell.generate import generate

    examples, _ = collect_examples(_alpaca(), 4, 7)
    prompt = render_prompt(DEFAULT_TEMPLATE, examples)
    anchor_ids = _new_token_ids(monkeypatch, lambda: auto_anchor.generate_text(
        _settings(tiny_model, tmp_path, max_tokens=80), prompt))
    assert len(anchor_ids) > 20 and _repeated_4grams(anchor_ids) == 0
    # the same model and prompt without the constraint does loop: the rule above is what prevents it
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    plain_ids = _new_token_ids(monkeypatch, lambda: generate(
        model, tok, [auto_anchor.prompt_token_ids(tok, prompt)], max_new_tokens=81, batch_size=1))
    assert _repeated_4grams(plain_ids) > 0
