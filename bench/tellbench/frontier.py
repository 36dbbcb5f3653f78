"""Issue 13's reading of a results file: SFT's curve against TELL's points, and the goal line per cell.

* the frontier: every ``sft_best`` run carries its whole curve (``frontier``: each saved epoch's test score and
  held-out general loss); TELL runs are single points, one per configuration (``tell_keys``);
* the x axis is the change of held-out general loss from the base model (``zero_shot`` of the same task);
* the goal, per task and row count: TELL at the plugin's current defaults within 1 point of ``sft_best`` (mean
  over seeds), its general loss within 0.02 nats of the base model's, while ``sft_best``'s is not.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import defaultdict
from pathlib import Path

SCORE_TOLERANCE = 0.01  # "within 1 point"
EPS = 1e-9  # means of scores in hundredths: a gap of exactly one point is -0.010000000000000002 in floats
BEST_MARGIN = 0.02  # issue 24: the validation-chosen TELL (tell_best) at least 2 points above sft_best
LOSS_TOLERANCE = 0.02  # nats


def plugin_defaults() -> dict:
    """The TELL keys a user gets without setting them (read from the plugin, so a new default is picked up)."""
    from axolotl_tell.args import DEFAULT_GENERAL_RATIO, DEFAULT_TASK_LOSS_WEIGHT, TellArgs

    return {"tell_general_ratio": float(DEFAULT_GENERAL_RATIO), "tell_task_repeats": "auto",
            "tell_task_loss_weight": float(DEFAULT_TASK_LOSS_WEIGHT),
            "tell_task_loss_share": "off" if TellArgs.model_fields["tell_task_loss_share"].default is None
            else float(TellArgs.model_fields["tell_task_loss_share"].default),
            "tell_spread": TellArgs.model_fields["tell_spread"].default}


@functools.lru_cache(maxsize=1)
def bench_learning_rate() -> float:
    """The learning rate every bench cell trains with unless its grid block sets another (grids.yaml `training`)."""
    from .spec import load_grids

    return float(load_grids()["training"]["learning_rate"])


def lever_defaults() -> dict:
    """Each lever's default: the plugin's for the `tell_*` keys; the bench's base rate for the learning rate, which
    the plugin leaves to the user's config (BENCHMARKS rule 4 still reads it as a lever for TELL's longer runs)."""
    return {**plugin_defaults(), "learning_rate": bench_learning_rate()}


def learning_rate(run: dict) -> float:
    """The learning rate a run trained with: recorded since the eleventh session; absent on older runs, which all
    trained at the bench's base rate (grids.yaml has set 5e-4 since the harness began, and no block changed it)."""
    lr = run.get("learning_rate")
    return bench_learning_rate() if lr is None else float(lr)


def spread(run: dict) -> str:
    """The spread a TELL run trained with (every bench cell writes `tell_spread`; absent: the plugin's default)."""
    return str((run.get("tell_keys") or {}).get("tell_spread") or plugin_defaults()["tell_spread"])


def loss_weight(run: dict) -> float:
    """The task loss weight a TELL run trained with: recorded from its report (runs from before the key: 1)."""
    if run.get("task_loss_weight") is not None:
        return float(run["task_loss_weight"])
    return float((run.get("tell_keys") or {}).get("tell_task_loss_weight", 1.0))


def loss_share(run: dict) -> str:
    """The task's fixed loss share a TELL run trained with (`tell_task_loss_share`), "off" where the weight applied."""
    share = run.get("task_loss_share", (run.get("tell_keys") or {}).get("tell_task_loss_share"))
    return "off" if share is None else f"{float(share):g}"


def default_repeats(run: dict) -> int:
    """The repeats ``tell_task_repeats: auto`` gives this run's row count today (the rule changed in issue 13)."""
    from axolotl_tell.plan import auto_task_repeats

    return auto_task_repeats(int(run["task_rows"]))


def repeats(run: dict) -> str:
    """The repeats a TELL run trained with, as a lever value: "auto" where they are what today's ``auto`` gives its
    row count (the rule changed in issue 13: a run that asked for 20 at 30 rows is today's default)."""
    ran = int(run["task_repeats"])
    return "auto" if ran == default_repeats(run) else str(ran)


def tell_label(run: dict) -> str:
    weight = loss_weight(run)
    label = f"TELL g{run['general_ratio']:g}"
    if run.get("task_repeats") is not None and int(run["task_repeats"]) != default_repeats(run):
        label += f" r{int(run['task_repeats'])}"  # the repeats it ran with, where today's auto gives others
    if loss_share(run) != "off":
        label += f" share{loss_share(run)}"
    elif weight != 1.0:
        label += f" w{weight:g}"
    if spread(run) != plugin_defaults()["tell_spread"]:
        label += f" {spread(run)}"
    if learning_rate(run) != bench_learning_rate():
        label += f" lr{learning_rate(run):g}"
    if run.get("precision") == "fp32":
        label += " fp32"
    return label


# tell_* keys every TELL cell of the bench sets (bench/tellbench/configs.py tell_config); other keys are levers
BENCH_TELL_KEYS = {"tell_task_datasets", "tell_anchor", "tell_anchor_placement", "tell_task_repeats",
                   "tell_general_ratio", "tell_spread", "tell_general_shortfall"}


# The levers a run may move off the defaults, one at a time: how to read each from a run, and its name in tables.
LEVERS = {"tell_task_loss_weight": ("weight", loss_weight),
          "tell_general_ratio": ("ratio", lambda run: float(run["general_ratio"])),
          "tell_spread": ("spread", spread),
          "tell_task_loss_share": ("task loss share", loss_share),
          "tell_task_repeats": ("repeats", repeats),
          "learning_rate": ("learning rate", learning_rate)}  # not a tell_* key: read from the run's record


def levers_off_default(run: dict) -> set | None:
    """The levers (``LEVERS`` keys) a bf16 TELL run moved off the plugin's defaults (the repeats judged by those it ran
    with: ``repeats``); None for a run that is not comparable (not TELL, fp32, no recorded repeats, or a lever key
    the bench does not vary)."""
    if run.get("method") != "tell" or run.get("precision") == "fp32" or run.get("task_repeats") is None:
        return None
    if {k for k in (run.get("tell_keys") or {}) if k not in BENCH_TELL_KEYS} - set(LEVERS):
        return None
    want = lever_defaults()
    off = {key for key, (_, value) in LEVERS.items() if value(run) != want[key]}
    if loss_share(run) != "off":  # the share replaces the weight (which then resolves to 1): one lever, not two
        off.discard("tell_task_loss_weight")
    return off


def at_defaults_but(run: dict, lever: str) -> bool:
    """A TELL run at the defaults in everything but (possibly) ``lever``."""
    off = levers_off_default(run)
    return off is not None and off <= {lever}


def is_default_tell(run: dict) -> bool:
    """A TELL run at the plugin's defaults: default ratio, today's auto repeats, every lever key at its default."""
    return levers_off_default(run) == set()


def training_view(run: dict) -> dict:
    """A ``tell_best`` run as the TELL run it trained: its keep-best keys only choose and score checkpoints. Any other
    key stays, so a run that also moved an unread key (a weight warm-up, say) is not taken for the defaults."""
    from .configs import KEEP_BEST_KEYS

    keys = {k: v for k, v in (run.get("tell_keys") or {}).items() if k not in KEEP_BEST_KEYS}
    return {**run, "method": "tell", "tell_keys": keys}


def is_default_tell_best(run: dict) -> bool:
    """A ``tell_best`` run whose training was TELL at the defaults (the goal's ``tell_best`` reads only these)."""
    return run.get("method") == "tell_best" and is_default_tell(training_view(run))


def tell_best_label(run: dict) -> str:
    """``tell_best`` for a run at the defaults; else the lever it moved (``tell_best (TELL g3 r12)``) or its grid
    variant, so a lever's runs are their own point and never averaged into the goal's ``tell_best``."""
    if is_default_tell_best(run):
        return "tell_best"
    view = training_view(run)
    return f"tell_best ({run['variant'] if run.get('variant') else tell_label(view)})"


def _ms(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def _fmt(mean, sd, n, digits=3, signed=False):
    if mean is None:
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if n > 1 else "") + f" (n={n})"


def points(runs: list[dict]) -> dict:
    """{(task, rows): {label: {"score": [...], "delta": [...]}}}: per seed, the change from that task's base."""
    base = {}  # the base model's held-out general loss, per task (zero_shot does not depend on rows or seed)
    for r in sorted(runs, key=lambda r: (r["seed"], r["task_rows"])):
        if r["method"] == "zero_shot" and r.get("general_loss") is not None:
            base.setdefault(r["task"], r)
    cells = defaultdict(lambda: defaultdict(lambda: {"score": [], "delta": [], "seed": [], "n": [], "hits": []}))

    def add(label, r, score, delta, hits=None):
        point = cell[label]
        point["score"].append(score)
        point["delta"].append(delta)
        point["seed"].append(r.get("seed"))
        point["n"].append(r.get("test_rows"))
        point["hits"].append(hits)

    for r in runs:
        if r["task"] not in base or r["method"] == "zero_shot":
            continue
        b = base[r["task"]]["general_loss"]
        cell = cells[(r["task"], r["task_rows"])]
        if r["method"] == "sft_best":
            for p in r.get("frontier") or []:
                add(f"SFT {p['epochs']} ep", r, p["score"], p["general_loss"] - b)
            label = "sft_best"
        elif r["method"] == "tell":
            label = tell_label(r)
        elif r["method"] == "tell_best":
            label = tell_best_label(r)
        else:
            label = r["method"]
        add(label, r, r["score"], r["general_loss"] - b, r.get("row_hits"))
        if is_default_tell(r):
            add("TELL (defaults)", r, r["score"], r["general_loss"] - b, r.get("row_hits"))
    for (task, rows), cell in cells.items():
        same_rows = [r for r in runs if r["method"] == "zero_shot" and r["task"] == task and r["task_rows"] == rows]
        zero = same_rows[0] if same_rows else base[task]  # one point: the base model is the same for every seed
        cell["zero_shot"].update(score=[zero["score"]], delta=[0.0], seed=[zero.get("seed")],
                                 n=[zero.get("test_rows")], hits=[zero.get("row_hits")])
    return cells


def _order(label: str):
    if label.startswith("SFT "):
        return (0, int(label.split()[1]))
    return ({"sft_best": 1, "sft_scaled": 1.5, "zero_shot": 2, "TELL (defaults)": 3, "tell_best": 4}.get(label, 5),
            label)


def table(runs: list[dict]) -> str:
    lines = ["| task | rows | point | task score | Δ held-out general loss (nats) |", "|---|---:|---|---|---|"]
    for (task, rows), cell in sorted(points(runs).items()):
        for label in sorted(cell, key=_order):
            p = cell[label]
            lines.append(f"| {task} | {rows} | {label} | {_fmt(*_ms(p['score']))} | "
                         f"{_fmt(*_ms(p['delta']), signed=True)} |")
    return "\n".join(lines)


def _smoothed(score: float, n: int) -> float:
    return (score * n + 1) / (n + 2)


def gap_noise(tell: dict, best: dict) -> tuple[float | None, str]:
    """The test set's sampling error (1 SE) of the gap between two points' mean scores, and how it was computed.

    Both score the same test rows, so a seed where both runs kept each row's hit (``row_hits``) is paired row by
    row: rows both get right or both get wrong add no noise. Any other run counts as an independent binomial
    estimate (Agresti-Caffo smoothed), which overstates the noise when the two agree on most rows. Pairing needs
    the same seeds on both sides (else every run is binomial). Seed-to-seed spread is not in it: that is the ± of
    the scores.
    """
    def binomial(score, n):
        p = _smoothed(score, n)
        return p * (1 - p) / n

    same_seeds = (sorted(tell["seed"], key=str) == sorted(best["seed"], key=str)
                  and len(set(tell["seed"])) == len(tell["seed"]))
    if not same_seeds:
        total = 0.0
        for points in (tell, best):
            if any(score is None or not n for score, n in zip(points["score"], points["n"])):
                return None, "unknown"  # a run without its test-row count (older results)
            total += sum(binomial(score, n) for score, n in zip(points["score"], points["n"])) / len(points["n"]) ** 2
        return math.sqrt(total), "binomial"
    t_by_seed, b_by_seed = (dict(zip(p["seed"], zip(p["score"], p["n"], p["hits"]))) for p in (tell, best))
    var = 0.0
    paired = 0
    for seed, (t_score, t_n, t_hits) in t_by_seed.items():
        b_score, b_n, b_hits = b_by_seed[seed]
        if t_hits and b_hits and len(t_hits) == len(b_hits):
            diffs = [int(x) - int(y) for x, y in zip(t_hits, b_hits)]
            mean = sum(diffs) / len(diffs)
            var += sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)
            paired += 1
        elif None in (t_score, b_score) or not t_n or not b_n:
            return None, "unknown"
        else:
            var += binomial(t_score, t_n) + binomial(b_score, b_n)
    se = math.sqrt(var) / len(t_by_seed)
    seeds = len(t_by_seed)
    how = "binomial" if not paired else "paired" if paired == seeds else f"paired on {paired} of {seeds} seeds"
    return se, how


def constant_floors(runs: list[dict]) -> dict:
    """{(task, rows): {"answer", "score", "n"}}: the best one-answer score on the cell's test rows (any run of the
    cell that recorded it; they share the test rows)."""
    floors = {}
    for r in runs:
        const = r.get("constant_answer")
        if const and r.get("test_rows"):
            floors.setdefault((r["task"], r["task_rows"]), {**const, "n": r["test_rows"]})
    return floors


def floor_reach(floor: dict, score: float) -> float:
    """How far ``score`` is above the constant answer's, in standard errors of the floor's own test-set noise."""
    p = _smoothed(floor["score"], floor["n"])
    return (score - floor["score"]) / math.sqrt(p * (1 - p) / floor["n"])


FLOOR_SE = 2  # a method "shows skill" on a cell when its mean score is over 2 SE above the constant answer's


def at_the_floor(cell: dict, floor: dict | None) -> bool:
    """True when no trained method of the cell clears the constant answer by ``FLOOR_SE`` standard errors: the cell
    then measures the answers' distribution, not the task, and ranks no method."""
    if not floor:
        return False
    trained = [_ms(p["score"])[0] for label, p in cell.items() if label != "zero_shot" and not label.startswith("SFT ")]
    return all(s is None or floor_reach(floor, s) <= FLOOR_SE for s in trained)


def _off_constant(runs: list[dict], task: str, rows: int, label: str) -> str:
    """"hits/rows" summed over seeds on the test rows the constant answer gets wrong, for one point of a cell."""
    def belongs(r):
        if r["task"] != task or r["task_rows"] != rows or not r.get("off_constant"):
            return False
        return is_default_tell(r) if label == "TELL (defaults)" else r["method"] == label

    split = [r["off_constant"] for r in runs if belongs(r)]
    return f"{sum(x['hits'] for x in split)}/{sum(x['rows'] for x in split)}" if split else "–"


def floors(runs: list[dict]) -> str:
    """Each cell's best constant answer against zero-shot, ``sft_best``, TELL and ``tell_best`` (means over seeds):
    a score at that floor is no evidence of task skill. Beside it, each method's hits on the rows that answer gets
    wrong (summed over seeds): at the floor, it tells a run that learnt the task from one that learnt the constant.
    Empty when no run recorded a constant answer."""
    found = constant_floors(runs)
    lines = []
    for (task, rows), cell in sorted(points(runs).items()):
        floor = found.get((task, rows))
        if not floor:
            continue
        cols = []
        for label in ("zero_shot", "sft_best", "TELL (defaults)", "tell_best"):
            p = cell.get(label)
            mean = _ms(p["score"])[0] if p else None
            cols.append("–" if mean is None else f"{mean:.3f} ({mean - floor['score']:+.3f})")
        reading = (f"no method clears it by {FLOOR_SE} SE: this cell ranks no method" if at_the_floor(cell, floor)
                   else f"some method clears it by {FLOOR_SE} SE")
        answer = str(floor["answer"]).replace("|", "/")[:30]
        off = " / ".join(_off_constant(runs, task, rows, label) for label in ("sft_best", "TELL (defaults)",
                                                                              "tell_best"))
        lines.append(f"| {task} | {rows} | `{answer}` | {floor['score']:.3f} | {' | '.join(cols)} | {off} | "
                     f"{reading} |")
    if not lines:
        return ""
    return "\n".join(["| task | rows | constant answer | its score | zero_shot (vs it) | sft_best (vs it) | "
                      "TELL (defaults) (vs it) | tell_best (vs it) | rows it misses, right: sft_best / TELL / "
                      "tell_best | reading |", "|---|---:|---|---:|---|---|---|---|---|---|", *lines])


def goal(runs: list[dict]) -> str:
    lines = ["| task | rows | sft_best score | TELL (defaults) score | gap | gap's test noise (1 SE) | TELL Δ loss | "
             "sft_best Δ loss | goal | tell_best score | tell_best gap (goal ≥ +0.02) |",
             "|---|---:|---|---|---:|---|---:|---:|---|---|---|"]
    found = constant_floors(runs)
    for (task, rows), cell in sorted(points(runs).items()):
        best, tell = cell.get("sft_best"), cell.get("TELL (defaults)")
        if not best or not tell:
            lines.append(f"| {task} | {rows} | {_fmt(*_ms(best['score'])) if best else '–'} | "
                         f"{_fmt(*_ms(tell['score'])) if tell else '–'} | – | – | – | – | not measured | "
                         f"{_best_columns(cell)} |")
            continue
        bs, ts = _ms(best["score"])[0], _ms(tell["score"])[0]
        bd, td = _ms(best["delta"])[0], _ms(tell["delta"])[0]
        gap = ts - bs
        se, how = gap_noise(tell, best)
        verdict = "met" if gap >= -SCORE_TOLERANCE - EPS else f"missed ({gap:+.3f})"
        if gap < -SCORE_TOLERANCE - EPS and se is not None and -gap <= 2 * se:
            verdict += ", inside 2 SE of the test set's noise"
        parts = ["task " + verdict,
                 "TELL keeps general " + ("yes" if td <= LOSS_TOLERANCE else f"no (+{td:.3f})"),
                 "sft_best forgets " + ("yes" if bd > LOSS_TOLERANCE else f"no ({bd:+.3f})")]
        if at_the_floor(cell, found.get((task, rows))):
            parts.append("no method clears the constant answer (see Constant answer)")
        seeds = min(len(best["score"]), len(tell["score"]))
        noise = "–" if se is None else f"{se:.3f} ({how})"
        few = "" if seeds >= 3 else f" ({seeds} seed(s) only)"
        lines.append(f"| {task} | {rows} | {_fmt(*_ms(best['score']))} | {_fmt(*_ms(tell['score']))} | {gap:+.3f} | "
                     f"{noise} | {td:+.3f} | {bd:+.3f} | {'; '.join(parts)}{few} | {_best_columns(cell)} |")
    return "\n".join(lines)


SPREAD_METHODS = ("sft_best", "TELL (defaults)", "tell_best")


def _by_seed(point: dict) -> dict:
    """{seed: mean score} of one method in one cell (a seed run twice counts once, at its mean)."""
    seeds = defaultdict(list)
    for seed, score in zip(point["seed"], point["score"]):
        seeds[seed].append(score)
    return {seed: statistics.mean(scores) for seed, scores in seeds.items()}


def _seed_gaps(mine: dict, theirs: dict) -> str:
    """``mine - theirs`` on each seed both have ({seed: score}), e.g. "s0 +0.02 s2 -0.10"; "" when none is shared."""
    return " ".join(f"s{seed} {round(mine[seed] - theirs[seed], 2) + 0.0:+.2f}"  # + 0.0: no -0.00
                    for seed in sorted(set(mine) & set(theirs)))


def seed_spread(runs: list[dict]) -> str:
    """Issue 24's seed spread: per cell with 2+ seeds, each method's score by seed and its range (max - min), and
    TELL minus ``sft_best`` seed by seed; then how often TELL's range is the wider one. A wide gap swing with a
    narrow TELL range says the spread is ``sft_best``'s, not TELL's. Empty when no cell has two seeds."""
    lines, wider, found = [], {True: [0, 0], False: [0, 0]}, constant_floors(runs)
    for (task, rows), cell in sorted(points(runs).items()):
        floor = at_the_floor(cell, found.get((task, rows)))
        seeded = {m: _by_seed(cell[m]) for m in SPREAD_METHODS if m in cell}
        if max((len(v) for v in seeded.values()), default=0) < 2:
            continue
        columns = []
        for m in SPREAD_METHODS:
            scores = seeded.get(m, {})
            shown = " ".join(f"s{seed} {scores[seed]:.2f}" for seed in sorted(scores))
            columns.append(f"{shown} (range {max(scores.values()) - min(scores.values()):.2f})"
                           if len(scores) > 1 else shown or "–")
        best, tell = seeded.get("sft_best", {}), seeded.get("TELL (defaults)", {})
        gaps = _seed_gaps(tell, best) or "–"
        if len(best) > 1 and len(tell) > 1:
            wider[floor][0] += (max(tell.values()) - min(tell.values())) > (max(best.values()) - min(best.values()))
            wider[floor][1] += 1
        lines.append(f"| {task} | {rows} | " + " | ".join(columns) + f" | {gaps} | {'yes' if floor else 'no'} |")
    if not lines:
        return ""
    return "\n".join(["| task | rows | sft_best by seed | TELL (defaults) by seed | tell_best by seed | "
                      "TELL − sft_best by seed | at the constant answer |", "|---|---:|---|---|---|---|---|",
                      *lines, "", f"Where both have 2+ seeds, TELL's range is wider than `sft_best`'s in "
                      f"{wider[False][0]} of {wider[False][1]} cells above the constant answer and in "
                      f"{wider[True][0]} of {wider[True][1]} at it."])


def meets_goal(point: dict, best: dict, margin: float) -> bool:
    """Issue 24's goal for one method's point in a cell: its mean score at least ``sft_best``'s + ``margin`` (−1 point
    for TELL at the defaults, +2 for ``tell_best``) and its mean general loss within the base model's + 0.02."""
    return (_ms(point["score"])[0] - _ms(best["score"])[0] >= margin - EPS
            and _ms(point["delta"])[0] <= LOSS_TOLERANCE)


def goal_summary(runs: list[dict], seeds_needed: int = 3) -> str:
    """One paragraph under the goal table: the cells with ``seeds_needed`` seeds of ``sft_best`` and TELL, how many
    of them meet TELL's half of issue 24's goal (score and general loss together), and, where ``tell_best`` has as
    many seeds, its half; the cells among them that sit at the constant answer."""
    found = constant_floors(runs)
    full, tell_met, kept_full, best_met, ceiling, floor, cells = [], [], [], [], [], [], 0
    for (task, rows), cell in sorted(points(runs).items()):
        best, tell, kept = cell.get("sft_best"), cell.get("TELL (defaults)"), cell.get("tell_best")
        if not best or not tell:
            continue
        cells += 1
        if min(len(_by_seed(best)), len(_by_seed(tell))) < seeds_needed:
            continue
        name = f"{task} {rows}"
        full.append(name)
        bs = _ms(best["score"])[0]
        if meets_goal(tell, best, -SCORE_TOLERANCE):
            tell_met.append(name)
        if at_the_floor(cell, found.get((task, rows))):
            floor.append(name)
        if not kept or len(_by_seed(kept)) < seeds_needed:
            continue
        kept_full.append(name)
        if meets_goal(kept, best, BEST_MARGIN):
            best_met.append(name)
        elif bs > 1.0 - BEST_MARGIN + EPS:
            ceiling.append(name)

    def listed(names):
        return f"{len(names)}" + (f" ({', '.join(names)})" if names else "")

    return (f"Cells with {seeds_needed}+ seeds of `sft_best` and TELL: {len(full)} of {cells}"
            + (f" ({', '.join(full)}); TELL's goal (score and general loss) met on {listed(tell_met)}; at the "
               f"constant answer: {listed(floor)}. With {seeds_needed}+ seeds of `tell_best` too: "
               f"{listed(kept_full)}; its goal met on {listed(best_met)}, unreachable on {listed(ceiling)} "
               f"(`sft_best` within {BEST_MARGIN:g} of the ceiling)." if full else "."))


PEERS = ("sft_scaled", "tell_no_anchor")  # issue 24: what a user would do instead to keep general skill


def peers(runs: list[dict]) -> str:
    """Each peer against TELL at the defaults on both axes (means over seeds): it "matches TELL" where its score is
    within 1 point of TELL's or above and its held-out general loss within 0.02 nats of the base model's (the
    retention TELL is held to). Empty when no cell has a peer."""
    lines = []
    for (task, rows), cell in sorted(points(runs).items()):
        tell = cell.get("TELL (defaults)")
        for peer in PEERS:
            p = cell.get(peer)
            if not p:
                continue
            ps, pd = _ms(p["score"])[0], _ms(p["delta"])[0]
            misses = []
            if tell and ps < _ms(tell["score"])[0] - SCORE_TOLERANCE - EPS:
                misses.append(f"task {ps - _ms(tell['score'])[0]:+.3f} vs TELL")
            if pd > LOSS_TOLERANCE:
                misses.append(f"general loss +{pd:.3f} over the base")
            verdict = ("no TELL run to compare" if not tell else "; ".join(misses) or "matches TELL on both axes")
            lines.append(f"| {task} | {rows} | {peer} | {_fmt(*_ms(p['score']))} | {pd:+.3f} | "
                         f"{_fmt(*_ms(tell['score'])) if tell else '–'} | {_paired_gaps(p, tell)} | {verdict} |")
    if not lines:
        return ""
    return "\n".join(["| task | rows | peer | score | Δ general loss | TELL (defaults) score | peer − TELL by seed "
                      "| reading |", "|---|---:|---|---|---:|---|---|---|", *lines])


def _paired_gaps(point: dict, tell: dict | None) -> str:
    """One method minus TELL on each seed both ran, and their mean: the reading's means may pool other seeds."""
    mine, theirs = _by_seed(point), _by_seed(tell) if tell else {}
    shown = _seed_gaps(mine, theirs)
    if not shown:
        return "–"
    gaps = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]
    return f"{shown} (paired mean {statistics.mean(gaps):+.3f})"


EFFICIENCY = 3  # issue 24's data-efficiency view: TELL at N task rows against sft_best at (at least) 3N rows


def data_efficiency(runs: list[dict]) -> str:
    """TELL at N rows against ``sft_best`` at the fewest measured rows >= 3N, same task (means over seeds): the
    paper's claim is parity with 3-10x fewer task rows. Empty when no task has both."""
    cells = points(runs)
    lines = []
    for (task, rows), cell in sorted(cells.items()):
        tell, kept = cell.get("TELL (defaults)"), cell.get("tell_best")
        if not tell and not kept:
            continue
        more = sorted(n for (t, n), c in cells.items() if t == task and n >= EFFICIENCY * rows and c.get("sft_best"))
        if not more:
            continue
        best = cells[(task, more[0])]["sft_best"]
        bs = _ms(best["score"])[0]

        def versus(point):
            return "–" if not point else f"{_fmt(*_ms(point['score']))} ({_ms(point['score'])[0] - bs:+.3f})"

        lines.append(f"| {task} | {rows} | {versus(tell)} | {versus(kept)} | {more[0]} | {_fmt(*_ms(best['score']))} |")
    if not lines:
        return ""
    return "\n".join(["| task | TELL rows N | TELL (defaults) (vs sft_best) | tell_best (vs sft_best) | sft_best rows "
                      f"(≥ {EFFICIENCY}N) | sft_best score |", "|---|---:|---|---|---:|---|", *lines])


def _best_columns(cell: dict) -> str:
    """tell_best's mean score and its gap to sft_best's, with issue 24's goal (+2 points, general loss kept)."""
    best, kept = cell.get("sft_best"), cell.get("tell_best")
    if not kept:
        return "– | –"
    ks, kd = _ms(kept["score"])[0], _ms(kept["delta"])[0]
    if not best:
        return f"{_fmt(*_ms(kept['score']))} | –"
    bs = _ms(best["score"])[0]
    gap = ks - bs
    verdict = "met" if meets_goal(kept, best, BEST_MARGIN) else "missed"
    if kd > LOSS_TOLERANCE:
        verdict += f"; general loss +{kd:.3f} over the base"
    if verdict.startswith("missed") and bs > 1.0 - BEST_MARGIN + EPS:  # no score can clear sft_best by 2 points
        verdict += f"; unreachable: sft_best at {bs:.3f}, the ceiling"
    return f"{_fmt(*_ms(kept['score']))} | {gap:+.3f} ({verdict})"


def plot(runs: list[dict], path: Path) -> Path | None:
    cells = points(runs)
    if not cells:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(cells)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        cell = cells[key]
        sft = sorted((lab for lab in cell if lab.startswith("SFT ")), key=_order)
        if sft:
            xs = [statistics.mean(cell[lab]["delta"]) for lab in sft]
            ys = [statistics.mean(cell[lab]["score"]) for lab in sft]
            ax.plot(xs, ys, "-o", color="tab:gray", label="SFT by epochs (curve)")
            for lab, x, y in zip(sft, xs, ys):
                ax.annotate(lab.split()[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        markers = {"sft_best": ("s", "tab:red"), "zero_shot": ("x", "black"), "TELL (defaults)": ("*", "tab:green")}
        # lever points get colours sft_best (red), the defaults (green) and zero_shot (black) do not use
        palette = iter(["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"] * 3)
        for label in sorted(cell, key=_order):
            if label.startswith("SFT "):
                continue
            p = cell[label]
            mx, sx, _ = _ms(p["delta"])
            my, sy, _ = _ms(p["score"])
            marker, color = markers.get(label) or ("o", next(palette))
            ax.errorbar([mx], [my], xerr=[sx], yerr=[sy], fmt=marker, color=color, capsize=3, label=label,
                        markersize=11 if label == "TELL (defaults)" else 7,
                        mfc="none" if label == "TELL (defaults)" else None)
        ax.axvline(LOSS_TOLERANCE, color="tab:green", ls=":", lw=1)
        ax.set_title(f"{key[0]}, {key[1]} rows", fontsize=9)
        ax.set_xlabel("Δ held-out general loss vs base (nats; left = kept)")
        ax.set_ylabel("task score (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("frontier: SFT's curve (epochs) vs TELL points; mean ± sd over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
