"""What the run trained on, said three ways: ``tell_report.json``, a log table, ``tell.json``.

``tell_report.json`` (in ``output_dir``) states the mix: requested vs achieved.
``tell.json`` (next to the adapter) carries everything needed to build the
inference prompt exactly as in training.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from axolotl_tell.version import __version__
from axolotl_tell.anchor import Anchor
from axolotl_tell.plan import MixPlan

REPORT_FILE = "tell_report.json"
INFERENCE_FILE = "tell.json"
# What tell.json may hold (prompting.validate_spec refuses anything else): the keys inference_spec writes.
SPEC_KEYS = ("tell_version", "anchor", "task_datasets", "base_model", "chat_template", "chat_template_jinja",
             "sequence_len", "plan_sha256", "kept")
SPEC_KEPT_KEYS = ("step", "metric", "value")  # `kept`: the checkpoint tell_keep_best chose (absent otherwise)
SPEC_ANCHOR_KEYS = ("text", "placement", "placement_requested", "separator", "source", "auto")


def build_report(plan: MixPlan, *, anchor: Anchor, sources: list[dict], general_filtering: dict, cfg) -> dict:
    task_sources = [s for s in sources if s["kind"] == "task"]
    placements = sorted({s["placement"] for s in task_sources})
    return {
        "plugin_version": __version__,
        "task": {
            "rows": plan.task_rows,
            "repeats": plan.task_repeats,
            "repeats_requested": cfg.get("tell_task_repeats") or "auto",
            "occurrences": plan.task_occurrences,
            "tokens": plan.task_tokens,
            "supervised_tokens": plan.task_supervised_tokens,
        },
        "general": {
            "rows_available": plan.general_rows_available,
            "rows_used": plan.general_rows_used,
            "occurrences": plan.general_occurrences,
            "tokens": plan.general_tokens,
            "supervised_tokens": plan.general_supervised_tokens,
            "supervised_tokens_requested": plan.general_tokens_requested,
            "shortfall": plan.shortfall,
            **general_filtering,
        },
        "ratio": {"requested": plan.ratio_requested, "achieved": round(plan.ratio_achieved, 4)},
        "rows_total": int(plan.order.size),
        "spread": plan.spread,
        "seed": plan.seed,
        "plan_sha256": plan.sha256,
        "anchor": {
            "text": anchor.text,
            "placement": placements[0] if len(placements) == 1 else placements,
            "placement_requested": anchor.placement,
            "separator": anchor.separator,
            "source": anchor.source,
            **({"auto": anchor.meta} if anchor.meta else {}),  # tell_anchor: auto: how it was made
        },
        "sources": sources,
        "sample_packing": bool(cfg.get("sample_packing")),
        "sequence_len": cfg.get("sequence_len"),
        "warnings": list(plan.warnings),
    }


def format_table(report: dict) -> str:
    """A short, fixed-width summary for the training log."""
    t, g, r = report["task"], report["general"], report["ratio"]
    requested = f"{r['requested']:g}" if r["requested"] is not None else f"{g['supervised_tokens_requested']} tok"
    rows = [
        ("", "rows", "occurrences", "tokens", "supervised"),
        ("task", f"{t['rows']} x{t['repeats']}", t["occurrences"], t["tokens"], t["supervised_tokens"]),
        ("general", f"{g['rows_used']}/{g['rows_available']}", g["occurrences"], g["tokens"], g["supervised_tokens"]),
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    lines = ["TELL mix " + "-" * 40]
    lines += ["  " + "  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines.append(f"  ratio general:task supervised tokens  requested {requested}  achieved {r['achieved']:.2f}")
    lines.append(f"  spread {report['spread']}  seed {report['seed']}  plan {report['plan_sha256'][:12]}  "
                 f"anchor ({report['anchor']['placement']}): {report['anchor']['text'][:60]!r}")
    for warning in report.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    return "\n".join(lines)


def inference_spec(report: dict, cfg) -> dict:
    """The content of ``tell.json``: how to rebuild a training prompt at inference."""
    task_entries = []
    for src, entry in zip([s for s in report["sources"] if s["kind"] == "task"], cfg.tell_task_datasets):
        task_entry = {**{k: v for k, v in dict(entry).items() if k != "path"},
                      "path": src["path"], "type": src["type"], "placement": src["placement"]}
        if task_entry.get("chat_template_jinja") is not None:
            task_entry["chat_template_jinja"] = template_text(task_entry["chat_template_jinja"])
        task_entries.append(task_entry)
    return {
        "tell_version": __version__,
        "anchor": report["anchor"],
        "task_datasets": task_entries,
        "base_model": cfg.get("base_model"),
        "chat_template": cfg.get("chat_template"),
        "chat_template_jinja": template_text(cfg.get("chat_template_jinja")),
        "sequence_len": cfg.get("sequence_len"),
        "plan_sha256": report["plan_sha256"],
    }


def template_text(jinja):
    """A ``chat_template_jinja`` as its text: Axolotl also takes a file path, but tell.json holds no paths to read."""
    if isinstance(jinja, str) and os.path.isfile(jinja):  # os.path: a long template is no error (ENAMETOOLONG)
        return Path(jinja).read_text(encoding="utf-8")
    return jinja


def write_json(path: Path, data: dict) -> Path:
    """Write ``path`` atomically; several writers at once are safe (the last rename wins, never a half file).

    Each writer has its own temporary file: nodes whose local rank 0 share an ``output_dir`` write the same
    report at the same time, and one shared temp name let a writer rename the other's file away (issue 26).
    The name holds the pid and a random part (pids repeat across hosts), and is created exclusively (``"x"``);
    not ``mkstemp``, whose 0600 mode would make the report unreadable to the other users of a shared folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, default=str))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed write or rename leaves no temp file behind
            os.unlink(tmp)
    return path


def trained_section(report: dict, trained: dict | None, steps_planned: int | None, max_steps) -> dict:
    """What the run actually trained, next to what it planned (``max_steps`` can stop it early).

    Token counts are the per-source loss's measured supervised tokens (absent with `tell_source_metrics: false`).
    ``complete``: every planned row was trained (``rows_trained`` of ``rows_planned``; ``rows_copied`` rows were
    trained a second time to give every rank full batches); from the steps only where rows were not counted.
    """
    steps = trained["steps"] if trained else None
    section = {"steps": steps, "steps_planned": steps_planned, "max_steps": int(max_steps) if max_steps else None,
               "complete": bool(steps is not None and steps_planned and steps >= steps_planned)}
    if trained and trained.get("rows_planned") is not None:
        section.update({key: trained[key] for key in ("rows_planned", "rows_trained", "rows_copied")})
        section["complete"] = trained["rows_trained"] >= trained["rows_planned"]
    resumed = (trained or {}).get("resumed_at_step")
    if resumed:
        section["resumed_at_step"] = resumed  # tokens below were counted from there on
    tokens = (trained or {}).get("supervised_tokens")
    if tokens:
        for kind in ("task", "general"):
            planned = report[kind]["supervised_tokens"]
            section[f"{kind}_supervised_tokens"] = tokens[kind]
            section[f"{kind}_share_of_plan"] = round(tokens[kind] / planned, 4) if planned and not resumed else None
    return section


def write_dry_run_report(output_dir, prepared) -> Path:
    """``preprocess`` / ``preview``: the mix's report, without ever touching a trained run's files.

    A folder with ``tell.json`` holds a trained run (only training writes it): its report stays; the dry run's
    report is the one in the prepared folder. Returns where the report is.
    """
    out = Path(output_dir)
    if (out / INFERENCE_FILE).is_file():
        where = Path(prepared.path) / REPORT_FILE
        import logging

        logging.getLogger("axolotl.tell").info(
            "[axolotl_tell] %s holds a trained run (tell.json): its files are left as they are; this dry run's "
            "report is %s", out, where)
        return where
    return write_json(out / REPORT_FILE, prepared.report)
