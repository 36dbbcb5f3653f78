"""What the validation rows say about TELL runs (issue 24): where each ``tell_best`` run's validation curve peaked,
and each lever's value against the default on the same cell and seed, read on validation scores only (BENCHMARKS'
decision rules: a default is chosen on rows the reported test score never sees)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from axolotl_tell.keep_best import choice_value, floor_margin

from .frontier import (FLOOR_SE, LEVERS, at_defaults_but, floor_reach, is_default_tell, is_default_tell_best,
                       lever_defaults, training_view)

LATE = 2 / 3  # a validation peak "late" in a run: at or after two thirds of its steps


def val_peaks(runs: list[dict]) -> str:
    """Where each default ``tell_best`` run's validation curve peaked: a peak late in the run says the run could
    have trained longer (the repeats lever), an early one that it went past its best (what ``tell_best`` keeps).
    Per run: its curve, the first step of the maximum (and its share of the run), the end minus the peak, the kept
    checkpoint's test score against TELL's end point on the same seed; then, per row count, how many peaked late.
    Runs whose validation scores all sit at the floor (``at_the_val_floor``) or whose curve is flat are shown, not
    counted. Empty when no run has a curve."""
    ends = {(r["task"], r["task_rows"], r["seed"]): r for r in runs if is_default_tell(r)}
    lines, late = [], defaultdict(lambda: [0, 0])
    for r in sorted((r for r in runs if is_default_tell_best(r) and r.get("val_curve") and r.get("steps")),
                    key=lambda r: (r["task_rows"], r["task"], r["seed"])):
        curve = r["val_curve"]
        top = max(p["value"] for p in curve)
        peak = next(p["step"] for p in curve if p["value"] == top)
        share = peak / float(r["steps"])
        floor = at_the_val_floor({**r, "val_score": top})
        flat = top == min(p["value"] for p in curve)  # e.g. 1.00 from the first evaluation: no peak to place
        if not floor and not flat:
            late[r["task_rows"]][0] += share >= LATE
            late[r["task_rows"]][1] += 1
        end = ends.get((r["task"], r["task_rows"], r["seed"]))
        versus = "–" if end is None else f"{r['score']:.2f} vs {end['score']:.2f} ({r['score'] - end['score']:+.2f})"
        lines.append(f"| {r['task']} | {r['task_rows']} | {r['seed']} | {r['steps']} | "
                     + " ".join(f"{p['value']:.2f}" for p in curve) + f" | {peak} ({share:.0%})"
                     + (" late" if share >= LATE else "") + f" | {curve[-1]['value'] - top:+.2f} | {versus} | "
                     + ("at the floor, not counted" if floor else "flat, not counted" if flat else "counted") + " |")
    if not lines:
        return ""
    summary = "; ".join(f"{rows} rows: {k} of {n}" for rows, (k, n) in sorted(late.items()))
    return "\n".join(["| task | rows | seed | steps | validation curve | peak step (share of run) | end − peak | "
                      "tell_best test vs TELL's end point | read |", "|---|---:|---:|---:|---|---|---:|---|---|",
                      *lines, "", f"Peaked at or after {LATE:.0%} of the run (counted runs): {summary}."])


def lever_runs(runs: list[dict], lever: str, method: str = "tell") -> dict:
    """{(task, rows, seed): {value: run}} for ``method``'s runs (``tell`` or ``tell_best``, read by what it trained)
    that differ from the defaults in ``lever`` alone (or not at all)."""
    out = defaultdict(dict)
    for r in runs:
        if r.get("method") != method:
            continue
        if at_defaults_but(training_view(r) if method == "tell_best" else r, lever):
            out[(r["task"], r["task_rows"], r["seed"])][LEVERS[lever][1](r)] = r
    return out


def sign_test(won: int, lost: int) -> float:
    """Exact two-sided sign test (McNemar) on the discordant rows: how often a fair coin splits this unevenly."""
    n, k = won + lost, min(won, lost)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def _initials(task: str) -> str:
    """question_formation -> QF: short enough for one table cell per paired run."""
    return "".join(word[:1] for word in task.split("_")).upper()


def at_the_val_floor(*tell_runs: dict) -> bool:
    """True when every one of these runs' validation scores is within ``FLOOR_SE`` standard errors of the validation
    rows' constant answer: a pair of such runs compares noise around the floor, and BENCHMARKS' decision rule (5)
    leaves it out of a lever's choice. False when a run has no recorded floor (older runs: counted, as before)."""
    for r in tell_runs:
        floor = r.get("val_constant_answer")
        if not floor or r.get("val_score") is None or not r.get("val_rows"):
            return False
        if floor_reach({**floor, "n": r["val_rows"]}, r["val_score"]) > FLOOR_SE:
            return False
    return True


def lever_choice(runs: list[dict], lever: str, method: str = "tell") -> str:
    """Each value of one lever against the current default on the same (task, rows, seed), everything else at the
    defaults: validation gain (what a default is chosen on), test gain, general loss and cost in steps. Empty when no
    value but the default has validation scores. ``method="tell_best"`` pairs keep-best runs: their validation score
    is the kept checkpoint's, chosen on those rows, so both sides carry the same choice among their evaluations."""
    name, _ = LEVERS[lever]
    by_seed = lever_runs(runs, lever, method)
    default = lever_defaults()[lever]
    base = {r["task"]: r["general_loss"] for r in runs if r["method"] == "zero_shot" and r.get("general_loss")}
    values = sorted({v for runs_ in by_seed.values() for v in runs_} - {default})  # one lever: one type
    show = (lambda v: f"{v:g}") if isinstance(default, float) else str
    lines = [f"| {name} vs {show(default)} | paired runs (task, rows, seed) | validation gain (mean, per run) | "
             "validation rows won / lost (sign test) | test gain (mean) | Δ general, worst run (this / "
             f"{show(default)}) | steps, mean (this / {show(default)}) |", "|---:|---|---|---|---:|---:|---:|"]
    for v in values:
        pairs = [(key, rs[v], rs[default]) for key, rs in sorted(by_seed.items())
                 if v in rs and default in rs and "val_score" in rs[v] and "val_score" in rs[default]]
        floored = [p for p in pairs if at_the_val_floor(p[1], p[2])]
        pairs = [p for p in pairs if p not in floored]
        if not pairs:
            if floored:
                lines.append(f"| {show(v)} | 0 (+{len(floored)} at the floor, not counted) | – | – | – | – | – |")
            continue
        val = [a["val_score"] - b["val_score"] for _, a, b in pairs]
        test = [a["score"] - b["score"] for _, a, b in pairs]
        worst = [max((run["general_loss"] - base[run["task"]] for run in side if run["task"] in base), default=None)
                 for side in ([a for _, a, _ in pairs], [b for _, _, b in pairs])]
        each = ", ".join(f"{_initials(t)}{n}/s{s} {x:+.2f}" for ((t, n, s), _, _), x in zip(pairs, val))
        won = lost = 0
        for _, a, b in pairs:  # rows one got right and the other wrong, over every pair that kept its rows' hits
            if a.get("val_row_hits") and len(a["val_row_hits"]) == len(b.get("val_row_hits") or ""):
                won += sum(x == "1" and y == "0" for x, y in zip(a["val_row_hits"], b["val_row_hits"]))
                lost += sum(x == "0" and y == "1" for x, y in zip(a["val_row_hits"], b["val_row_hits"]))
        rows = f"+{won} / −{lost} (p = {sign_test(won, lost):.2g})" if won + lost else "–"
        steps = [statistics.mean(float(side["steps"]) for side in group) if all("steps" in g for g in group) else None
                 for group in ([a for _, a, _ in pairs], [b for _, _, b in pairs])]
        counted = f"{len(pairs)}" + (f" (+{len(floored)} at the floor, not counted)" if floored else "")
        lines.append(f"| {show(v)} | {counted} | {statistics.mean(val):+.3f} ({each}) | {rows} | "
                     f"{statistics.mean(test):+.3f} | "
                     + " / ".join("–" if x is None else f"{x:+.3f}" for x in worst) + " | "
                     + " / ".join("–" if x is None else f"{x:.0f}" for x in steps) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def replayed_choice(curve: list[dict], floor: float, margin: float) -> int:
    """The step ``tell_keep_best`` keeps from this validation curve: the plugin's own ``choice_value`` per
    evaluation, ties to the later step (as ``later_wins_ties`` makes the trainer do)."""
    compared = [choice_value(p["value"], floor, margin) for p in curve]
    return [p["step"] for p, c in zip(curve, compared) if c == max(compared)][-1]


def floor_margin_replay(runs: list[dict]) -> dict:
    """Re-decide every default ``tell_best`` run's kept checkpoint under the one-answer floor as shipped (strict
    ``>``) and with the shipped margin (BENCHMARKS, "A margin over the one-answer floor"). A rule's
    choice can be scored only when it is the recorded kept step (the ``tell_best`` run's own score) or the last step
    (its TELL end point: ``exact`` when the ``tell`` run is that run's end, ``end_point_of``, else the separately
    trained ``tell`` run of the same cell and seed). The margin is the plugin's ``keep_best.floor_margin``. Returns ``{"rows": [...], "skipped": [...], "summary": {...}}``."""
    twins = {r["end_point_of"]: r for r in runs if r.get("method") == "tell" and r.get("end_point_of")}
    ends = {(r["task"], r["task_rows"], r["seed"]): r for r in runs if is_default_tell(r) and not r.get("end_point_of")}
    rows, skipped = [], []
    for r in sorted((r for r in runs if is_default_tell_best(r) and r.get("val_curve")),
                    key=lambda r: (r["task"], r["task_rows"], r["seed"])):
        floor = (r.get("chosen_floor") or r.get("val_constant_answer") or {}).get("score")
        end = twins.get(r["key"])
        exact = end is not None
        end = end or ends.get((r["task"], r["task_rows"], r["seed"]))
        name = f"{r['task']} {r['task_rows']}, seed {r['seed']}"
        if (r.get("chosen_floor") or {}).get("margin") is not None:  # chosen with the margin: nothing to replay
            skipped.append(f"{name}: recorded with the margin")
            continue
        if floor is None or end is None or not r.get("val_rows"):
            skipped.append(f"{name}: no " + ("floor" if floor is None else "eval rows" if end else "scored end point"))
            continue
        last = r["val_curve"][-1]["step"]
        scored = {r.get("chosen_step"): r, last: end}
        margin = floor_margin(floor, r["val_rows"])
        now, new = (replayed_choice(r["val_curve"], floor, m) for m in (0.0, margin))
        if now not in scored or new not in scored:
            skipped.append(f"{name}: a replayed choice (step {now} or {new}) is neither the kept step nor the end")
            continue
        rows.append({"run": name, "exact": exact, "floor": floor, "margin": round(margin, 4),
                     "best_val": max(p["value"] for p in r["val_curve"]), "step_now": now, "step_margin": new,
                     "last_step": last, "score_now": scored[now]["score"], "score_margin": scored[new]["score"],
                     "general_now": scored[now]["general_loss"], "general_margin": scored[new]["general_loss"]})
    n = len(rows)
    summary = {"runs": n, "changed": sum(x["step_now"] != x["step_margin"] for x in rows),
               "exact": sum(x["exact"] for x in rows)}
    if n:
        summary["mean_score_change"] = sum(x["score_margin"] - x["score_now"] for x in rows) / n
        summary["mean_general_change"] = sum(x["general_margin"] - x["general_now"] for x in rows) / n
        summary["ship"] = summary["mean_score_change"] >= 0 and summary["mean_general_change"] <= 0
        exact = [x for x in rows if x["exact"]]
        if exact:  # the replays that need no second training run, reported apart
            summary["exact_mean_score_change"] = sum(x["score_margin"] - x["score_now"] for x in exact) / len(exact)
            summary["exact_mean_general_change"] = sum(x["general_margin"] - x["general_now"] for x in exact) / len(exact)
    return {"rows": rows, "skipped": skipped, "summary": summary}


def floor_margin_table(runs: list[dict]) -> str:
    """``floor_margin_replay`` as the report's table: the runs whose choice the margin changes, then the verdict of
    the ship test written before the replay. Empty when no run can be replayed."""
    replay = floor_margin_replay(runs)
    s = replay["summary"]
    if not s["runs"]:
        return ""
    lines = ["| run | floor (+ margin) | best validation | kept step: now → with margin (last) | test score | "
             "held-out general loss | end point |", "|---|---|---:|---|---|---|---|"]
    for x in replay["rows"]:
        if x["step_now"] == x["step_margin"]:
            continue
        lines.append(f"| {x['run']} | {x['floor']:.2f} (+{x['margin']:.3f}) | {x['best_val']:.2f} | "
                     f"{x['step_now']} → {x['step_margin']} ({x['last_step']}) | {x['score_now']:.2f} → "
                     f"{x['score_margin']:.2f} | {x['general_now']:.3f} → {x['general_margin']:.3f} | "
                     + ("this run's" if x["exact"] else "separate TELL run") + " |")
    verdict = ("ship: the mean test score does not fall and the mean general loss does not rise" if s["ship"] else
               "do not ship: " + " and ".join(w for w, bad in (("the mean test score falls", s["mean_score_change"] < 0),
                                                               ("the mean general loss rises",
                                                                s["mean_general_change"] > 0)) if bad))
    tail = [f"{s['runs']} runs replayed ({s['exact']} exact), {s['changed']} changed; mean over all replayed runs: "
            f"test score {s['mean_score_change']:+.4f}, held-out general loss {s['mean_general_change']:+.4f}. "
            f"Verdict of the rule written before the replay: {verdict}."]
    if "exact_mean_score_change" in s:
        tail[0] += (f" The {s['exact']} exact replays alone: test score {s['exact_mean_score_change']:+.4f}, held-out "
                    f"general loss {s['exact_mean_general_change']:+.4f}.")
    if replay["skipped"]:
        tail.append("Not replayable: " + "; ".join(replay["skipped"]) + ".")
    return "\n".join(lines + [""] + tail)
