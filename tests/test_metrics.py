"""Task metrics on known predictions (pure: no model)."""

from __future__ import annotations

import math

import pytest

from axolotl_tell.metrics import exact_match, first_json_object, json_fields, label_accuracy, score


def test_exact_match_ignores_case_space_and_final_punctuation_only():
    preds = ["Has the girl used my notebook?", "do the boys run", "does the boy runs", " can  it fly"]
    refs = ["has the girl used my notebook", "do the boys run.", "does the boy run", "can it fly"]
    result = exact_match(preds, refs)
    assert result == {"exact_match": 0.5, "n": 4}  # inner spacing and wrong words still count as wrong


def test_label_accuracy_reads_the_first_word():
    preds = ["Negative.", "positive - the hotel was great", "I think it is neutral", "ambivalent"]
    refs = ["negative", "positive", "neutral", "negative"]
    assert label_accuracy(preds, refs)["accuracy"] == 0.5


def test_first_json_object_skips_prose_fences_and_broken_json():
    assert first_json_object('Sure! ```json\n{"thought": "x", "hallucination": "yes"}\n```') == {
        "thought": "x", "hallucination": "yes"}
    assert first_json_object('{"a": 1, broken} then {"b": {"c": 2}}') == {"b": {"c": 2}}
    assert first_json_object("no json here [1, 2]") is None


def test_json_fields_valid_rate_accuracy_and_f1_of_yes():
    preds = ['{"hallucination": "yes"}', '{"hallucination": "no"}', "not json", '{"hallucination": "Yes."}']
    refs = ["yes", "yes", "no", "no"]
    result = json_fields(preds, refs)
    assert result["json_valid"] == 0.75
    assert result["accuracy"] == 0.25  # only the first is right; the unparsable one counts as wrong
    # yes: tp=1 (row 0), fp=1 (row 3), fn=1 (row 1) -> precision 0.5, recall 0.5, F1 0.5
    assert math.isclose(result["f1_yes"], 0.5)


def test_score_adds_the_headline_and_rejects_unknown_metrics():
    assert score("json_fields", ['{"hallucination": "no"}'], ["no"])["score"] == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", ["a"], ["a"])


def test_a_user_metric_by_dotted_path():
    from axolotl_tell.evaluate import resolve_metric

    fn = resolve_metric("tiny.length_metric")
    assert fn(["ab", "abcd"], ["x", "y"]) == {"mean_length": 3.0}
    with pytest.raises(ValueError, match="cannot import"):
        resolve_metric("nowhere.metric")
