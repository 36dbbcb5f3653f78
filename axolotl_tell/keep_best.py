"""`tell_keep_best`: keep the checkpoint with the best task generation metric, not the run's end point.

Built on transformers' own machinery: the plugin turns on step evaluations and saves at the same steps,
``load_best_model_at_end`` and ``metric_for_best_model``; its generation eval (``training._GenerateAtEval``)
puts ``eval_tell/<metric>`` into every rank's evaluation metrics, where the trainer picks the best checkpoint and
loads it before Axolotl saves the final adapter. The run's end point is always one of the candidates (an
evaluation is added at the last step).

With a built-in metric and no ``metric_for_best_model`` of the user's, the trainer compares ``eval_tell/keep_best``:
the headline metric with the eval rows' one-answer floor, plus a margin of one standard error, under it
(:func:`choice_value`); the headline itself is logged unchanged. Pure logic: no Axolotl import.
"""

from __future__ import annotations

from axolotl_tell.metrics import HEADLINE

DEFAULT_EVALUATIONS = 7  # like the benchmark's sft_best, which picks among 7 candidate epochs
METRIC_PREFIX = "eval_tell/"
CHOICE_KEY = f"{METRIC_PREFIX}keep_best"  # what the trainer compares when the plugin chooses the key


def keep_best(cfg) -> bool:
    return bool(cfg.get("tell_keep_best"))


def reported_metric_key(cfg) -> str | None:
    """The metric the kept checkpoint is reported by, as it appears in the evaluation metrics
    (``eval_tell/exact_match``).

    Axolotl's ``metric_for_best_model`` wins when set (transformers adds the ``eval_`` prefix); else the headline
    number of a built-in ``tell_eval_generate``; a custom metric function has no headline (None: a config error).
    """
    user = cfg.get("metric_for_best_model")
    if user:
        return user if str(user).startswith("eval_") else f"eval_{user}"
    headline = HEADLINE.get(str(cfg.get("tell_eval_generate")))
    return f"{METRIC_PREFIX}{headline}" if headline else None


def floor_applies(cfg) -> bool:
    """True when the plugin chooses what the trainer compares (a built-in metric, no ``metric_for_best_model``):
    then the one-answer floor counts. A key the user named is compared as it is."""
    return not cfg.get("metric_for_best_model") and str(cfg.get("tell_eval_generate")) in HEADLINE


def best_metric_key(cfg) -> str | None:
    """The key the trainer compares: ``eval_tell/keep_best`` (see :func:`choice_value`) when the floor applies, else
    the reported metric itself (None: no metric to choose by, a config error)."""
    return CHOICE_KEY if floor_applies(cfg) else reported_metric_key(cfg)


FLOOR_MARGIN_SE = 1.0  # an evaluation beats the floor only by more than one standard error of the floor's score


def floor_margin(score: float, rows: int | None) -> float:
    """How far over the one-answer floor an evaluation must score to count: ``FLOOR_MARGIN_SE`` standard errors of
    the floor's score on the eval rows, ``sqrt(p(1-p)/n)`` (0.071 at p = 0.5 on 50 rows; 0 for a floor of 0 or 1,
    or with the row count unknown). Why: a checkpoint with no skill beyond the constant answer scores within one SE
    of the floor about two times in three, and at 50 rows a strict ``>`` let one lucky row decide (measured: a
    sports_understanding run kept a step at 0.52 against the floor's 0.50 that answered "implausible" on 99 of 100
    test rows, 0.50, where its end point scored 0.59). Replayed on the benchmark's 41 recorded ``tell_best`` runs
    (BENCHMARKS, "A margin over the one-answer floor", rule and ship test written before the replay): 11 choices
    move to the end point; mean over all 41 runs +0.9 test points, -0.0025 nats held-out general loss.
    """
    import math

    if not rows:
        return 0.0
    return FLOOR_MARGIN_SE * math.sqrt(max(0.0, score * (1.0 - score)) / rows)


def choice_value(value: float, floor: float | None, margin: float = 0.0) -> float:
    """What the trainer compares for one evaluation: the metric, raised to the one-answer floor plus ``margin``
    (:func:`floor_margin`) when not above it.

    An evaluation no better than answering one fixed reference everywhere (``constant_answer_score`` of the eval
    rows), or better only by the eval rows' noise, shows no skill the validation rows can see; among such
    evaluations the choice would follow noise. Raised to the same value, they tie, and ties go to the later step
    (:func:`later_wins_ties`): the plan's end point, which trained all its general rows, unless some evaluation
    beats the floor by the margin. The floor alone, measured on the benchmark's 21 recorded ``tell_best`` runs
    (``bench/results/leverage_cpu.json``): it changes 2, both disfl_qa, where the kept early checkpoints
    (validation 0.04 and 0.28 against the floor's 0.28) had raised the held-out general loss by +0.12 and +0.07
    nats; their end points sit at -0.01 and -0.14.
    """
    if floor is None:
        return value
    threshold = float(floor) + margin
    return value if value > threshold else threshold


def evaluation_interval(cfg) -> float | int:
    """``eval_steps`` as the user wrote it (steps, or a fraction of the run), else one run / evaluations."""
    if cfg.get("eval_steps"):
        return cfg["eval_steps"]
    return 1.0 / int(cfg.get("evals_per_epoch") or DEFAULT_EVALUATIONS)


def keep_best_training_args(cfg) -> dict | None:
    """The trainer arguments that keep the best checkpoint; None unless ``tell_keep_best`` is on."""
    if not keep_best(cfg):
        return None
    interval = evaluation_interval(cfg)
    greater = cfg.get("greater_is_better")
    return {"eval_strategy": "steps", "eval_steps": interval, "save_strategy": "steps", "save_steps": interval,
            "load_best_model_at_end": True, "metric_for_best_model": best_metric_key(cfg),
            "greater_is_better": True if greater is None else bool(greater)}


def later_wins_ties(value: float, best_raw: float | None, best_recorded: float | None, greater: bool) -> float:
    """The value to hand the trainer so that a tie with the best so far goes to the later step.

    transformers keeps the first of equal values (a strict comparison). For TELL the later checkpoint has trained
    more of the plan, its general rows too (measured: held-out general loss 1.507 at the end of a 100-row run vs
    1.618 at its first evaluation, both scoring 1.0 on validation), so a tie is nudged one float past the recorded
    best: the choice changes, the number does not (the report keeps the raw values).
    """
    import math

    if best_raw is None or best_recorded is None or value != best_raw:
        return value
    return math.nextafter(best_recorded, math.inf if greater else -math.inf)


def steps_between_evaluations(interval, max_steps: int) -> int:
    """transformers' reading of ``eval_steps``: a fraction below 1 is a share of the run, rounded up."""
    import math

    return int(math.ceil(max_steps * interval)) if interval < 1 else int(interval)


def kept_section(best_checkpoint: str | None, best_metric, best_step, metric_key: str | None,
                 evaluations: list[dict], final_step: int, floor: dict | None = None) -> dict | None:
    """What ``tell_report.json`` says of the kept checkpoint (None when no checkpoint was chosen). ``floor``: the
    eval rows' one-answer floor (``{"answer", "score", "margin"}``) where it counted in the choice; ``above_floor``
    says whether the kept value beats it by the margin."""
    if not best_checkpoint:
        return None
    if not best_step:  # older transformers keep no best_global_step: the folder name has it
        tail = str(best_checkpoint).rstrip("/").rsplit("checkpoint-", 1)[-1]
        best_step = int(tail) if tail.isdigit() else None
    raw = [e["value"] for e in evaluations if e["step"] == best_step]  # best_metric may be nudged (ties)
    value = raw[-1] if raw else best_metric
    kept = {"step": best_step, "checkpoint": str(best_checkpoint), "metric": metric_key,
            "value": None if value is None else float(value),
            "is_final_step": best_step == final_step, "evaluations": evaluations}
    if floor is not None:
        kept["floor"] = dict(floor)
        kept["above_floor"] = (kept["value"] is not None
                               and kept["value"] > floor["score"] + floor.get("margin", 0.0))
    return kept
