"""Task metrics on (prediction, reference) strings. PURE: standard library only.

* ``exact_match``: equal after :func:`normalize` (case, surrounding space and
  trailing ``.?!`` ignored).
* ``label_accuracy``: the prediction's first word (normalized) equals the label.
* ``json_fields``: the first JSON object in the prediction is parsed; reports the
  valid-JSON rate, the accuracy of one field against the reference label, and
  F1 of the positive label (the TELL paper's Halu-CoT-JSON metric).

:func:`constant_answer` is the floor under any of them: the best score one fixed answer gets on the same rows.
"""

from __future__ import annotations

import json
import re
from collections import Counter

_TRAILING = re.compile(r"[\s.?!]+$")


def normalize(text: str) -> str:
    return _TRAILING.sub("", str(text).strip().lower())


def exact_match(predictions: list[str], references: list[str]) -> dict:
    hits = [normalize(p) == normalize(r) for p, r in zip(predictions, references, strict=True)]
    return {"exact_match": sum(hits) / len(hits) if hits else 0.0, "n": len(hits)}


def _first_word(text: str) -> str:
    words = normalize(text).split()
    return words[0].strip(".,:;!?\"'") if words else ""


def label_accuracy(predictions: list[str], references: list[str]) -> dict:
    hits = [_first_word(p) == normalize(r) for p, r in zip(predictions, references, strict=True)]
    return {"accuracy": sum(hits) / len(hits) if hits else 0.0, "n": len(hits)}


def first_json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (code fences and prose around it are skipped)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def json_fields(predictions: list[str], references: list[str], field: str = "hallucination",
                positive: str = "yes") -> dict:
    parsed = [first_json_object(p) for p in predictions]
    labels = [normalize(r) for r in references]
    guesses = [normalize(obj.get(field, "")) if obj else None for obj in parsed]
    tp = sum(g == positive and r == positive for g, r in zip(guesses, labels))
    fp = sum(g == positive and r != positive for g, r in zip(guesses, labels))
    fn = sum(g != positive and r == positive for g, r in zip(guesses, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n = len(labels)
    return {
        "json_valid": sum(obj is not None for obj in parsed) / n if n else 0.0,
        "accuracy": sum(g == r for g, r in zip(guesses, labels)) / n if n else 0.0,
        f"f1_{positive}": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "n": n,
    }


METRICS = {"exact_match": exact_match, "accuracy": label_accuracy, "json_fields": json_fields}
HEADLINE = {"exact_match": "exact_match", "accuracy": "accuracy", "json_fields": "accuracy"}


def score(metric: str, predictions: list[str], references: list[str]) -> dict:
    """All numbers of ``metric`` plus ``score``: the headline number."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(METRICS)}")
    result = METRICS[metric](predictions, references)
    result["score"] = result[HEADLINE[metric]]
    return result


def constant_answer(metric: str, references: list[str], candidates: int = 5) -> dict | None:
    """The best score one fixed answer gets on these rows, trying the most common references (ties: the more common).

    The floor a model must clear to show it learnt the task rather than the answers' distribution: "plausible" on
    every row of a balanced binary task scores ~0.5, "unknown" on every reading-comprehension row scores the share of
    unanswerable questions. ``{"answer": ..., "score": ...}``; None without rows.
    """
    if not references:
        return None
    common = [answer for answer, _ in Counter(references).most_common(candidates)]
    scored = [(score(metric, [answer] * len(references), references)["score"], -i, answer)
              for i, answer in enumerate(common)]
    best, _, answer = max(scored)
    return {"answer": answer, "score": best}
