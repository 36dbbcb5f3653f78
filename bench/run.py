"""The TELL leverage benchmark: one entry point, the same plugin and Axolotl code path users run.

usage:
  python bench/run.py --grid main|sweeps|cpu_demo|smoke --out bench/results/<name>.json
                      [--model DIR] [--device auto|cpu|cuda] [--device-note TEXT] [--seeds 0 1 2]
                      [--tasks T ...] [--methods M ...] [--max-cells N] [--time-budget SECONDS]
                      [--shared-data DIR] [--work DIR] [--launcher python|accelerate]
  python bench/run.py --report-only --out bench/results/<name>.json     # table + plots again
  python bench/run.py --out bench/results/<name>.json --constant-answers    # each run's constant-answer floor
  python bench/run.py --grid G --out bench/results/<name>.json --rescore-val [filters]
                      # validation scores for TELL runs recorded without them (from their adapters on disk)

For each cell (task, method, task_rows, seed, task_repeats, general_ratio) of the grid (``bench/grids.yaml``):
write the task subset and the general data as chat JSONL, generate the method's Axolotl YAML, run
``axolotl train`` on it (a subprocess), score the adapter (task metric from training-exact prompts, held-out
general loss, generation check on general prompts; TELL runs also on the validation rows, which levers' defaults
are chosen on) and append the run to the results JSON at once. Cells
already in the results file are skipped: re-running the same command resumes. Then it writes
``<name>.md`` (table) and ``<name>_*.png`` (plots) next to the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(BENCH), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from tellbench import axo, configs, data, report, scoring  # noqa: E402
from tellbench.spec import ANCHORED_METHODS, TELL_METHODS, Cell, expand, load_grids, load_task  # noqa: E402

DEFAULT_MODEL = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
SFT_BEST_CHOICE = "sft_best_choice.json"  # in an sft_best cell's folder: the adapter it chose, for sft_scaled
SFT_FACTS = ("task_repeats", "epochs", "steps", "steps_run", "chosen_epochs", "general_tokens",
             "general_supervised_tokens", "task_tokens", "task_supervised_tokens", "precision", "steps_per_epoch",
             "rows_per_step")  # what sft_scaled's record repeats from its sft_best twin (it trains nothing itself)
# what task_eval returns beside the metrics
TASK_EVAL_FIELDS = ("examples", "metric", "row_hits", "answer_mix", "constant_answer", "off_constant")
REQUIRED_KEYS = ("task", "method", "task_rows", "seed", "score", "metric", "general_loss", "model", "task_repeats",
                 "general_tokens", "task_tokens", "train_tokens", "steps", "wall_s", "device")


# ----------------------------------------------------------------------------------------------- results file
def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"runs": []}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")  # one per writer: parallel streams share the file
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def results_lock(path: Path):
    """Hold an exclusive lock on the results file's sidecar while reading, changing and writing it.

    Several runners (the GPU machine's parallel streams) append to one file: without the lock, two read-modify-write
    cycles that overlap keep only the later writer's runs.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_run(path: Path, rec: dict, meta: dict | None = None) -> dict:
    """Add (or replace, by key) one run in the results file; runs other writers added meanwhile are kept."""
    with results_lock(path):
        results = load_results(path)
        if meta:
            results.setdefault("meta", {}).update(meta)
        results["runs"] = [r for r in results["runs"] if r["key"] != rec["key"]] + [rec]
        save_results(path, results)
    return results


# ----------------------------------------------------------------------------------------------- the runner
class Bench:
    def __init__(self, args):
        import torch

        self.args = args
        self.grids = load_grids(args.grids)
        self.model = str(Path(args.model).resolve())
        if args.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = args.device
        self.profile = "gpu" if self.device.startswith("cuda") else "cpu"
        if self.device.startswith("cuda"):
            name = torch.cuda.get_device_name(0)
        else:  # every CPU number names its CPU and whether it computes bf16 natively (BENCHMARKS.md)
            from axolotl_tell.cpu_precision import detect_cpu_bf16

            self.cpu = detect_cpu_bf16()
            name = f"cpu ({os.cpu_count()} cores; {self.cpu.cpu}; {'' if self.cpu.native else 'no '}native bf16)"
        self.device_name = name + (f"; {args.device_note}" if args.device_note else "")
        self.batch = 32 if self.profile == "gpu" else 8
        self.work = Path(args.work).resolve()
        self._task_data: dict = {}
        self._general: dict = {}
        self._tok = None

    # -- data -------------------------------------------------------------------------------------------------
    def task_data(self, cell: Cell) -> tuple[dict, data.TaskData]:
        spec = load_task(cell.task)
        key = (cell.task, cell.overrides.get("test_rows"), cell.overrides.get("val_rows"))
        if key not in self._task_data:
            self._task_data[key] = data.TaskData(spec, self.args.shared_data, test_rows=key[1], val_rows=key[2])
        return spec, self._task_data[key]

    def general(self, cell: Cell) -> dict:
        cfg = cell.overrides.get("general") or self.grids["general"]
        digest = data.general_digest(cfg)
        if digest not in self._general:
            self._general[digest] = data.write_general(cfg, self.work / "data" / f"general-{digest}",
                                                       self.args.shared_data)
        return self._general[digest]

    def task_file(self, cell: Cell, spec: dict, td: data.TaskData) -> Path:
        rows = [data.task_message_row(spec, r) for r in td.train_rows(cell.task_rows, cell.seed)]
        return data.write_jsonl(self.work / "data" / f"task-{cell.task_name}-n{cell.task_rows}-s{cell.seed}.jsonl", rows)

    def settings(self, cell: Cell) -> dict:
        settings = configs.training_settings(self.grids, self.profile, cell.overrides.get("train"))
        if self.profile == "cpu" and settings.get("bf16") == "auto":
            # resolved here as the plugin would: plain-Axolotl cells get the same precision, records say what ran
            settings["bf16"] = self.cpu.native
        return settings

    def repeats(self, cell: Cell) -> int:
        from axolotl_tell.plan import auto_task_repeats

        return auto_task_repeats(cell.task_rows) if cell.task_repeats == "auto" else int(cell.task_repeats)

    def cpu_bf16(self, settings: dict) -> bool:
        return self.profile == "cpu" and bool(settings.get("bf16") or settings.get("bfloat16"))

    @staticmethod
    def max_new_tokens(cell: Cell, spec: dict) -> int:
        return int(cell.overrides.get("max_new_tokens") or spec["max_new_tokens"])

    def cell_dir(self, cell: Cell) -> Path:
        return self.work / "cells" / cell.slug

    # -- TELL plan (shared by tell, tell_no_anchor, sft_matched) ------------------------------------------------
    def tell_config_path(self, cell: Cell) -> Path:
        """The plugin config of a TELL cell, or of the TELL twin of a cell matched to one."""
        twin = cell if cell.method in TELL_METHODS else cell.tell_twin()
        spec, td = self.task_data(twin)
        gen = self.general(twin)
        d = self.cell_dir(twin)
        extra = dict(twin.overrides.get("tell") or {})
        if twin.method == "tell_best":
            val_file = data.write_jsonl(self.work / "data" / f"val-{twin.task_name}-v{len(td.val)}.jsonl",
                                        [data.task_message_row(spec, r) for r in td.val])
            extra.update(configs.keep_best_keys(val_file, spec["metric"], self.max_new_tokens(twin, spec),
                                                self.batch))
            if getattr(self.args, "general_eval_curve", False):  # Axolotl's own eval set: the held-out general rows
                extra["test_datasets"] = [configs.chat_entry(gen["heldout"])]
        cfg = configs.tell_config(self.model, self.settings(twin), seed=twin.seed, general_pool=gen["pool"],
                                  task_file=self.task_file(twin, spec, td),
                                  anchor="auto" if twin.method == "tell_auto_anchor" else spec["anchor"],
                                  task_repeats=twin.task_repeats, general_ratio=twin.general_ratio,
                                  out=d / "out", prepared=self.work / "prepared_tell", extra_tell=extra)
        path = d / "config.yml"
        if path.is_file() and path.read_text(encoding="utf-8") != configs.dump(cfg):
            for stale in ("tell_report.json", "tell.json"):  # another model/setting: that plan and run are stale
                (d / "out" / stale).unlink(missing_ok=True)  # (a dry run never rewrites a trained run's files)
        return configs.write_config(path, cfg)

    def tell_plan(self, cell: Cell) -> tuple[dict, float]:
        """The TELL twin's report (``axolotl preprocess`` through the plugin if it has not run yet)."""
        twin_dir = self.cell_dir(cell.tell_twin())
        wall = 0.0
        config = self.tell_config_path(cell)
        report_ = axo.tell_report(twin_dir / "out")
        if report_ is None or not Path(report_["prepared_path"], "plan_order.npy").is_file():
            wall = axo.run_axolotl("preprocess", config, twin_dir / "preprocess.log")
            report_ = axo.tell_report(twin_dir / "out")
        return report_, wall

    # -- one cell ---------------------------------------------------------------------------------------------
    def run(self, cell: Cell) -> dict:
        spec, td = self.task_data(cell)
        gen = self.general(cell)
        settings = self.settings(cell)
        rows_per_step = int(settings["micro_batch_size"]) * int(settings.get("gradient_accumulation_steps") or 1)
        d = self.cell_dir(cell)
        d.mkdir(parents=True, exist_ok=True)
        rec = self.base_record(cell, settings)
        wall, adapter, extra = 0.0, None, {}
        repeats = self.repeats(cell)
        task_file = self.task_file(cell, spec, td)
        method = cell.method

        if method == "zero_shot":
            rec.update(task_repeats=0, general_tokens=0, task_tokens=0, train_tokens=0, steps=0, epochs=0)
        elif method in TELL_METHODS:
            config = self.tell_config_path(cell)
            wall = axo.run_axolotl("train", config, d / "train.log", self.args.launcher)
            rep = axo.tell_report(d / "out")
            rec.update(self.tell_facts(d, rep, rows_per_step))
            if method == "tell_best":  # the step the plugin kept, and the validation curve it chose from
                kept = (rep.get("trained") or {}).get("kept")
                if not kept:
                    raise RuntimeError(f"tell_best: {d / 'out'} names no kept checkpoint (tell_report.json)")
                rec.update(chosen_step=kept["step"], chosen_val_score=kept["value"],
                           val_curve=kept["evaluations"], chosen_is_final=kept["is_final_step"],
                           chosen_floor=kept.get("floor"))  # None: recorded before the floor counted
                general_curve = axo.eval_general_curve(d / "out")
                if general_curve:  # --general-eval-curve: the held-out general loss at each evaluation
                    rec["val_general_curve"] = general_curve
            adapter = d / "out"
        elif method == "tell_no_anchor":
            rep, wall = self.tell_plan(cell)
            ordered, task_positions = self.no_anchor_rows(rep, gen, task_file)
            ordered_file = data.write_jsonl(d / "ordered.jsonl", ordered)
            cfg = configs.plain_config(self.model, settings, seed=cell.seed, data_file=ordered_file, out=d / "out",
                                       prepared=d / "prepared", epochs=1, ordered=True,
                                       cpu_bf16=self.cpu_bf16(settings))
            wall += axo.run_axolotl("train", configs.write_config(d / "config.yml", cfg), d / "train.log",
                                    self.args.launcher)
            lengths, sup = axo.row_counts(axo.prepared_dataset(d / "prepared"))
            if len(lengths) != rep["rows_total"]:
                raise RuntimeError(f"plain Axolotl kept {len(lengths)} of the plan's {rep['rows_total']} rows")
            is_task = np.zeros(len(lengths), bool)
            is_task[task_positions] = True
            self.check_same_general_rows(rep, d / "prepared", is_task)
            facts = axo.train_log_facts(d / "train.log")
            rec.update(task_repeats=rep["task"]["repeats"], general_tokens=int(lengths[~is_task].sum()),
                       task_tokens=int(lengths[is_task].sum()), task_supervised_tokens=int(sup[is_task].sum()),
                       general_supervised_tokens=int(sup[~is_task].sum()), general_rows_used=rep["general"]["rows_used"],
                       general_ratio_achieved=rep["ratio"]["achieved"], plan_sha256=rep["plan_sha256"], epochs=1,
                       steps=facts["steps_logged"] or axo.steps_per_epoch(len(lengths), rows_per_step), **facts)
            adapter = d / "out"
        elif method == "sft_scaled":  # no training: sft_best's chosen adapter, its LoRA delta scaled on validation
            chosen = self.sft_best_choice(cell)
            rec.update(chosen["record"], scaled_from=cell.sft_best_twin().key)
            adapter = self.work / chosen["adapter"]
        else:  # task rows only: sft, sft_matched, sft_best, sft_anchor
            anchor = spec["anchor"] if method == "sft_anchor" else None
            epochs, max_steps = repeats, None
            per_epoch = axo.steps_per_epoch(cell.task_rows, rows_per_step)
            if method == "sft_matched":
                rep, wall = self.tell_plan(cell)
                max_steps = axo.steps_per_epoch(rep["rows_total"], rows_per_step)
                epochs = math.ceil(max_steps / per_epoch)
                extra["tell_steps"] = max_steps
            else:
                if method == "sft_best":
                    epochs = max(self.grids["sft_best"]["candidates"])
                # Axolotl alone would stop at ceil(rows * epochs / batch) steps, short of `epochs` whole passes
                # when the last batch of an epoch is partial (10 rows, batch 8, 20 epochs: 25 steps = 12.8
                # passes); max_steps makes it exactly `epochs` passes.
                max_steps = per_epoch * epochs
            cfg = configs.plain_config(self.model, settings, seed=cell.seed, data_file=task_file, out=d / "out",
                                       prepared=d / "prepared", epochs=epochs, max_steps=max_steps, anchor=anchor,
                                       save_every_epoch=method == "sft_best", cpu_bf16=self.cpu_bf16(settings))
            wall += axo.run_axolotl("train", configs.write_config(d / "config.yml", cfg), d / "train.log",
                                    self.args.launcher)
            lengths, sup = axo.row_counts(axo.prepared_dataset(d / "prepared"))
            if len(lengths) != cell.task_rows:
                raise RuntimeError(f"plain Axolotl kept {len(lengths)} of {cell.task_rows} task rows")
            facts = axo.train_log_facts(d / "train.log")
            steps = facts["steps_logged"] or max_steps
            extra.update(epoch_tokens=int(lengths.sum()), epoch_supervised_tokens=int(sup.sum()),
                         steps_per_epoch=per_epoch, rows_per_step=rows_per_step)
            rec.update(general_tokens=0, general_supervised_tokens=0, **facts)
            self.count_passes(rec, extra, steps, cell.task_rows)
            adapter = d / "out"

        rec["wall_s"] = round(wall, 1)
        t0 = time.perf_counter()
        rec.update(self.evaluate(cell, spec, td, gen, adapter, d, rec))
        rec["eval_s"] = round(time.perf_counter() - t0, 1)
        if method == "sft_best" and rec.get("chosen_epochs"):  # the kept adapter saw `chosen_epochs` passes
            rec["steps_run"] = rec["steps"]
            self.count_passes(rec, extra, int(rec["chosen_epochs"]) * extra["steps_per_epoch"], cell.task_rows)
        rec.update(extra)
        rec["train_tokens"] = rec["general_tokens"] + rec["task_tokens"]
        rec["config"] = str((d / "config.yml").relative_to(self.work)) if (d / "config.yml").is_file() else None
        rec["tell_keys"] = self.tell_keys(cell)
        rec["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if method == "sft_best":  # what sft_scaled scales: the chosen adapter (kept below) and this run's facts
            chosen = rec.get("chosen_checkpoint") or str((d / "out").relative_to(self.work))
            (d / SFT_BEST_CHOICE).write_text(json.dumps(
                {"adapter": chosen, "record": {k: rec[k] for k in SFT_FACTS if k in rec}}, indent=1))
        if method in ("sft_best", "tell_best") and not self.args.keep_checkpoints:
            kept = self.work / rec["chosen_checkpoint"] if rec.get("chosen_checkpoint") else None
            last = (d / "out" / f"checkpoint-{int(rec['steps'])}"
                    if method == "tell_best" and getattr(self.args, "tell_end_from_best", False) else None)
            for ckpt in (d / "out").glob("checkpoint-*"):
                if ckpt not in (kept, last):  # the last one: end_point reads it, then drop_checkpoints
                    shutil.rmtree(ckpt, ignore_errors=True)
        return rec

    def drop_checkpoints(self, cell: Cell) -> None:
        """A tell_best cell's checkpoints once its end point is scored (unless --keep-checkpoints)."""
        if not self.args.keep_checkpoints:
            for ckpt in (self.cell_dir(cell) / "out").glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)

    def base_record(self, cell: Cell, settings: dict) -> dict:
        """What every record says about its cell before training: which cell, model, device, precision, rate."""
        return {"key": cell.key, "task": cell.task, "method": cell.method, "task_rows": cell.task_rows,
                "seed": cell.seed, "task_repeats_requested": cell.task_repeats, "general_ratio": cell.general_ratio,
                "model": Path(self.model).name, "device": self.device_name, "variant": cell.variant or None,
                "precision": "bf16" if settings.get("bf16") or settings.get("bfloat16") else "fp32",
                "learning_rate": float(settings["learning_rate"]), "lr_scheduler": settings.get("lr_scheduler")}

    @staticmethod
    def tell_facts(d: Path, rep: dict, rows_per_step: int) -> dict:
        """A trained TELL cell's plan and training facts, from its tell_report.json and train.log."""
        facts = axo.train_log_facts(d / "train.log")
        trained = rep.get("trained") or {}
        return dict(task_repeats=rep["task"]["repeats"], general_tokens=rep["general"]["tokens"],
                    task_tokens=rep["task"]["tokens"], task_supervised_tokens=rep["task"]["supervised_tokens"],
                    general_supervised_tokens=rep["general"]["supervised_tokens"],
                    general_rows_used=rep["general"]["rows_used"], general_ratio_achieved=rep["ratio"]["achieved"],
                    plan_sha256=rep["plan_sha256"], epochs=1, anchor=rep["anchor"]["text"],
                    task_loss_weight=trained.get("task_loss_weight", 1.0),
                    task_loss_share=trained.get("task_loss_share"), anchor_source=rep["anchor"]["source"],
                    steps=trained.get("steps") or facts["steps_logged"]
                    or axo.steps_per_epoch(rep["rows_total"], rows_per_step),
                    **{k: v for k, v in facts.items() if k != "steps"})

    def end_point(self, best: Cell, best_rec: dict) -> dict:
        """TELL at the defaults read from a ``tell_best`` run's last checkpoint (``--tell-end-from-best``), scored as
        its ``tell`` twin would be, instead of training the twin again.

        The same training: the twin's config is the tell_best config without the keep-best keys (checked), and the
        keep-best evaluations only read the model (greedy generation, no dropout; the trainer's data order is
        seeded), so the last checkpoint is what a separate run reaches up to the CPU's run-to-run noise (BENCHMARKS:
        separate tell and tell_best runs' logged losses differ from the first logged step on, before any
        evaluation). ``wall_s`` is the tell_best run's, evaluations included; ``end_point_of`` names it."""
        cell = best.twin("tell")
        d_best, d = self.cell_dir(best), self.cell_dir(cell)
        d.mkdir(parents=True, exist_ok=True)
        import yaml

        mine = yaml.safe_load(self.tell_config_path(cell).read_text(encoding="utf-8"))  # the twin's tell_keys
        theirs = yaml.safe_load((d_best / "config.yml").read_text(encoding="utf-8"))
        if not configs.same_training(mine, theirs):
            raise RuntimeError(f"{cell.key}: its config differs from {best.key}'s beyond the keep-best keys; "
                               "train it (run without --tell-end-from-best)")
        last = d_best / "out" / f"checkpoint-{int(best_rec['steps'])}"
        if not (last / "adapter_config.json").is_file():
            raise RuntimeError(f"{cell.key}: no checkpoint of {best.key}'s last step at {last}")
        spec, td = self.task_data(cell)
        settings = self.settings(cell)
        rows_per_step = int(settings["micro_batch_size"]) * int(settings.get("gradient_accumulation_steps") or 1)
        rec = self.base_record(cell, settings)
        rec.update(self.tell_facts(d_best, axo.tell_report(d_best / "out"), rows_per_step),
                   wall_s=best_rec["wall_s"], end_point_of=best.key)
        t0 = time.perf_counter()
        rec.update(self.evaluate(cell, spec, td, self.general(cell), last, d, rec, spec_dir=d_best / "out"))
        rec["eval_s"] = round(time.perf_counter() - t0, 1)
        rec["train_tokens"] = rec["general_tokens"] + rec["task_tokens"]
        rec["config"] = str((d / "config.yml").relative_to(self.work))
        rec["tell_keys"] = self.tell_keys(cell)
        rec["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return rec

    def sft_best_choice(self, cell: Cell) -> dict:
        """The sft_best twin's chosen adapter (relative to the work folder) and its training facts."""
        twin = cell.sft_best_twin()
        path = self.cell_dir(twin) / SFT_BEST_CHOICE
        if not path.is_file():
            raise RuntimeError(f"sft_scaled scales the adapter sft_best chose: {path} is missing. Fix: run the cell "
                               f"{twin.key} first (list sft_best before sft_scaled in the block); an sft_best run "
                               "recorded before sft_scaled existed kept no adapter: remove its record to run it again")
        choice = json.loads(path.read_text(encoding="utf-8"))
        if not (self.work / choice["adapter"] / "adapter_config.json").is_file():
            raise RuntimeError(f"sft_scaled: the adapter {self.work / choice['adapter']} named in {path} is gone. "
                               f"Fix: remove the record of {twin.key} and run both cells again")
        return choice

    def tell_keys(self, cell: Cell) -> dict | None:
        """Every ``tell_*`` key of the plugin run behind a cell (its own, or its TELL twin's plan), from the YAML."""
        import yaml

        if cell.method in TELL_METHODS:
            path = self.cell_dir(cell) / "config.yml"
        elif cell.method in ("tell_no_anchor", "sft_matched"):
            path = self.cell_dir(cell.tell_twin()) / "config.yml"
        else:
            return None
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return {k: v for k, v in cfg.items() if k.startswith("tell_")} or None

    @staticmethod
    def count_passes(rec: dict, extra: dict, steps: int, rows: int) -> None:
        """Steps, tokens and passes of a task-only run after ``steps`` optimizer steps.

        The sampler shuffles each epoch into ``steps_per_epoch`` batches, the last one partial when ``rows`` is not
        a multiple of the batch; tokens are the per-epoch total times the passes made (exact for whole epochs).
        """
        per_epoch, batch = extra["steps_per_epoch"], extra["rows_per_step"]
        full, rest = divmod(int(steps), per_epoch)
        passes = (full * rows + min(rest * batch, rows)) / rows
        rec.update(task_repeats=round(passes, 3), epochs=round(passes, 3), steps=int(steps),
                   task_tokens=int(round(extra["epoch_tokens"] * passes)),
                   task_supervised_tokens=int(round(extra["epoch_supervised_tokens"] * passes)))

    @staticmethod
    def check_same_general_rows(rep: dict, prepared: Path, is_task) -> None:
        """tell_no_anchor trains on the TELL mix's general rows, token for token, at the same positions."""
        from datasets import load_from_disk

        tell_ids = load_from_disk(str(Path(rep["prepared_path"]) / "train"))["input_ids"]
        plain_ids = axo.prepared_dataset(prepared)["input_ids"]
        bad = [i for i in np.flatnonzero(~is_task).tolist() if list(tell_ids[i]) != list(plain_ids[i])]
        if bad:
            raise RuntimeError(f"tell_no_anchor: {len(bad)} general rows differ from the TELL mix (first at {bad[0]})")

    def no_anchor_rows(self, rep: dict, gen: dict, task_file: Path) -> tuple[list[dict], "object"]:
        """The TELL plan's rows in its order, task rows without the anchor; and the task rows' positions."""
        import numpy as np

        from axolotl_tell.general_pool import scan_order

        g = rep["general"]
        pool = data.read_jsonl(Path(gen["pool"]))
        dropped = g.get("rows_dropped_too_long", 0) + g.get("rows_dropped_no_supervised_tokens", 0)
        if g["rows_available"] != len(pool) or dropped:
            raise RuntimeError(f"the plugin kept {g['rows_available']} of {len(pool)} pool rows ({dropped} dropped): "
                               "plan ids are not positions in the pool's scan order; shorten the pool's rows "
                               "(`max_chars`)")
        # plan ids: general rows in the pool's scan order (as many as were scanned), then the task rows
        candidates = int(g.get("rows_candidates", len(pool)))
        line_of = scan_order(len(pool))
        task = data.read_jsonl(task_file)
        order = np.load(Path(rep["prepared_path"]) / "plan_order.npy")
        rows = [pool[line_of[i]] if i < candidates else task[i - candidates] for i in order.tolist()]
        return rows, np.flatnonzero(order >= candidates)

    # -- scoring ----------------------------------------------------------------------------------------------
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.model)
        return self._tok

    def evaluate(self, cell: Cell, spec: dict, td: data.TaskData, gen: dict, adapter: Path | None, d: Path,
                 rec: dict, spec_dir: Path | None = None) -> dict:
        """``spec_dir``: where the run's tell.json is, when ``adapter`` is one of its checkpoints."""
        cache = None
        max_new = int(cell.overrides.get("max_new_tokens") or spec["max_new_tokens"])
        if cell.method == "zero_shot":  # one evaluation of the untouched model per task setting
            cache = self.work / "zero_shot" / (f"{cell.task}-{Path(self.model).name}-t{len(td.test)}-m{max_new}-"
                                               f"{data.general_digest(cell.overrides.get('general') or self.grids['general'])}.json")
            if cache.is_file():
                return json.loads(cache.read_text())
        model, tok = scoring.load(self.model, adapter if adapter and (adapter / "adapter_config.json").is_file()
                                  else None, self.device)
        anchored = cell.method in ANCHORED_METHODS
        prompts_for = self.prompter(cell, spec, spec_dir or adapter, tok)
        out = {"prompt": "anchored" if anchored else "plain"}
        if cell.method in TELL_METHODS:
            out.update(self.val_eval(model, tok, spec, td, prompts_for, max_new))
        if cell.method == "sft_scaled":
            out.update(self.pick_scale(cell, spec, td, model, tok, prompts_for, max_new))
        if cell.method == "sft_best":
            out.update(self.pick_epoch(cell, spec, td, d, prompts_for, max_new))
            if out.get("chosen_checkpoint"):
                del model
                model, tok = scoring.load(self.model, out["chosen_checkpoint"], self.device)
                out["chosen_checkpoint"] = str(Path(out["chosen_checkpoint"]).relative_to(self.work))
        if out.get("val_rows"):  # the validation rows' floor, as the test rows' below (levers are read on these)
            out["val_constant_answer"] = scoring.constant_answer(spec["metric"],
                                                                 [data.task_reference(spec, r) for r in td.val])
        refs = [data.task_reference(spec, r) for r in td.test]
        task = scoring.task_eval(model, tok, prompts_for(td.test), refs, spec["metric"], max_new, self.batch)
        general_cfg = cell.overrides.get("general") or self.grids["general"]
        general = scoring.general_eval(
            model, tok, data.read_jsonl(Path(gen["heldout"])),
            [r["prompt"] for r in data.read_jsonl(Path(gen["gen_prompts"]))], spec.get("general_leak_regex"),
            max_new_tokens=int((general_cfg.get("gen_check") or {}).get("max_new_tokens", 64)), batch_size=self.batch)
        out.update(score=task["score"], metric=spec["metric"],
                   metrics={k: v for k, v in task.items() if k not in TASK_EVAL_FIELDS},
                   **{k: task[k] for k in TASK_EVAL_FIELDS if k != "metric"}, test_rows=len(td.test), **general)
        del model
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(out))
        return out

    def prompter(self, cell: Cell, spec: dict, adapter: Path | None, tok):
        """rows -> token prompts exactly as the method trained: anchored (TELL: its tell.json's anchor and
        template) or the plain chat template."""
        if cell.method in TELL_METHODS:  # the anchor and template the run trained with, from its tell.json
            from axolotl_tell.prompting import load_spec

            prompt_spec = load_spec(adapter)
        else:
            prompt_spec = scoring.anchored_spec(spec["anchor"], self.settings(cell).get("chat_template",
                                                                                      "tokenizer_default"))

        def prompts_for(rows):
            msgs = [data.task_message_row(spec, r) for r in rows]
            if cell.method in ANCHORED_METHODS:
                return scoring.anchored_prompts(prompt_spec, tok, msgs)
            return scoring.plain_prompts(tok, msgs, prompt_spec["chat_template"])

        return prompts_for

    def val_eval(self, model, tok, spec: dict, td: data.TaskData, prompts_for, max_new: int) -> dict:
        """A TELL run's score on the validation rows: a lever's default is chosen on these, as `sft_best`'s
        epoch is, never on the test rows it is reported on."""
        if not td.val:
            return {}
        refs = [data.task_reference(spec, r) for r in td.val]
        val = scoring.task_eval(model, tok, prompts_for(td.val), refs, spec["metric"], max_new, self.batch)
        return {"val_score": val["score"], "val_rows": len(td.val), "val_row_hits": val["row_hits"]}

    def rescore_val(self, cell: Cell) -> dict | None:
        """``val_eval`` for a TELL run recorded before runs kept it, from its adapter on disk (None: no adapter)."""
        adapter = self.cell_dir(cell) / "out"
        if not (adapter / "adapter_config.json").is_file():
            return None
        spec, td = self.task_data(cell)
        max_new = int(cell.overrides.get("max_new_tokens") or spec["max_new_tokens"])
        model, tok = scoring.load(self.model, adapter, self.device)
        out = self.val_eval(model, tok, spec, td, self.prompter(cell, spec, adapter, tok), max_new)
        del model
        return out

    def pick_scale(self, cell, spec, td, model, tok, prompts_for, max_new) -> dict:
        """sft_scaled: sft_best's adapter with its LoRA delta at each scale of the grid's ``sft_scaled.scales``, scored
        on the validation rows; the best is kept (ties: the smaller scale, nearer the base model), the model is left
        at that scale for the test rows and the general checks."""
        if not td.val:
            raise RuntimeError("sft_scaled chooses its scale on validation rows: this task setting has none")
        scales = sorted({float(s) for s in self.grids["sft_scaled"]["scales"]})
        refs = [data.task_reference(spec, r) for r in td.val]
        prompts = prompts_for(td.val)
        scores = {}
        for scale in scales:
            scoring.set_lora_scale(model, scale)
            scores[scale] = scoring.task_eval(model, tok, prompts, refs, spec["metric"], max_new, self.batch)["score"]
            print(f"[bench]   sft_best adapter x {scale:g}: val {scores[scale]:.3f}", flush=True)
        best = max(scales, key=lambda s: (scores[s], -s))
        scoring.set_lora_scale(model, best)
        return {"val_scores": {f"{s:g}": v for s, v in scores.items()}, "val_rows": len(td.val), "chosen_scale": best}

    def pick_epoch(self, cell, spec, td, d: Path, prompts_for, max_new) -> dict:
        """sft_best: score the adapter of each candidate epoch on the validation rows; keep the best."""
        ckpts = {}
        for state in (d / "out").glob("checkpoint-*/trainer_state.json"):
            epoch = json.loads(state.read_text()).get("epoch")
            if epoch is not None:
                ckpts[int(round(float(epoch)))] = state.parent
        lost = [e for e in self.grids["sft_best"]["candidates"] if e <= max(ckpts, default=0) and e not in ckpts]
        if lost:  # a checkpoint limit deleted them: choosing among the rest would be a different method
            raise RuntimeError(f"sft_best: no saved adapter for candidate epochs {lost} in {d / 'out'}")
        candidates = [e for e in self.grids["sft_best"]["candidates"] if e in ckpts]
        if not candidates:
            return {"val_scores": {}, "chosen_epochs": None, "chosen_checkpoint": None}
        refs = [data.task_reference(spec, r) for r in td.val]
        val_prompts = prompts_for(td.val)
        test_refs = [data.task_reference(spec, r) for r in td.test]
        test_prompts = prompts_for(td.test)
        heldout = data.read_jsonl(Path(self.general(cell)["heldout"]))
        # `sft_curve: false` (a grid block's key): validation rows only at each epoch, the test rows and the general
        # loss at the chosen one alone (the caller scores it): ~7x less generation where the curve is not plotted
        curve = cell.overrides.get("sft_curve", True)
        scores, frontier = {}, []
        for epoch in candidates:  # SFT's whole curve: each epoch's adapter on val, test and held-out general loss
            model, tok = scoring.load(self.model, ckpts[epoch], self.device)
            scores[epoch] = scoring.task_eval(model, tok, val_prompts, refs, spec["metric"], max_new,
                                              self.batch)["score"]
            if not curve:
                print(f"[bench]   sft epoch {epoch}: val {scores[epoch]:.3f}", flush=True)
                del model
                continue
            test = scoring.task_eval(model, tok, test_prompts, test_refs, spec["metric"], max_new, self.batch)
            loss = scoring.general_eval(model, tok, heldout, [], None, batch_size=self.batch)["general_loss"]
            frontier.append({"epochs": epoch, "val_score": scores[epoch], "score": test["score"],
                             "general_loss": loss})
            print(f"[bench]   sft epoch {epoch}: val {scores[epoch]:.3f}  test {test['score']:.3f}  "
                  f"general loss {loss:.3f}", flush=True)
            del model
        best = max(candidates, key=lambda e: (scores[e], -e))
        return {"val_scores": {str(e): s for e, s in scores.items()}, "val_rows": len(td.val),
                "chosen_epochs": best, "chosen_checkpoint": str(ckpts[best]), **({"frontier": frontier} if curve else {})}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="main")
    ap.add_argument("--grids", default=str(BENCH / "grids.yaml"), help="the grids file (default bench/grids.yaml)")
    ap.add_argument("--out", required=True, help="results JSON, e.g. bench/results/main_h100.json")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="base model folder (HF format)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--device-note", default="", help="free text added to every run's `device`")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds")
    ap.add_argument("--tasks", nargs="*", help="only these tasks")
    ap.add_argument("--methods", nargs="*", help="only these methods")
    ap.add_argument("--sizes", type=int, nargs="*", help="only these task_rows")
    ap.add_argument("--ratios", type=float, nargs="*", help="only these general_ratio values")
    ap.add_argument("--variants", nargs="*", help="only these block variants ('-' = the unnamed one)")
    ap.add_argument("--repeats", nargs="*", help="only these requested task_repeats ('auto' or a number): a lever "
                    "block of other repeats shares its variant name ('-') with the default cells")
    ap.add_argument("--max-cells", type=int, help="run at most N new cells, then stop")
    ap.add_argument("--time-budget", type=float, help="seconds; start no new cell that would likely end after it")
    ap.add_argument("--shared-data", help="where ../shared/data lives (e.g. a staged copy on the GPU machine)")
    ap.add_argument("--work", help="work folder (configs, adapters); default bench/work/<grid>")
    ap.add_argument("--launcher", default="python", help="`axolotl train --launcher` (python | accelerate)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep sft_best's per-epoch adapters")
    ap.add_argument("--tell-end-from-best", action="store_true",
                    help="record a `tell` cell from its `tell_best` twin's last checkpoint (the same training; the "
                         "keep-best evaluations only read the model) instead of training it again: one TELL "
                         "training per cell and seed; the twin runs first")
    ap.add_argument("--general-eval-curve", action="store_true",
                    help="tell_best cells also evaluate the held-out general rows (Axolotl's `test_datasets`) at "
                         "each keep-best evaluation and record `val_general_curve`: where in the run the general "
                         "loss moved (the kept choice is unchanged: it reads the task metric only)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the table and plots")
    ap.add_argument("--constant-answers", action="store_true",
                    help="add `constant_answer` (the best one-answer score on the test rows), `off_constant` (a "
                         "run's hits on the rows that answer misses) and `val_constant_answer` (on the validation "
                         "rows) to recorded runs that lack them; reads the task data only (no model)")
    ap.add_argument("--rescore-val", action="store_true",
                    help="score the validation rows of recorded TELL runs that lack `val_score` (adapters on disk)")
    args = ap.parse_args(argv)
    if args.work is None:
        args.work = str(BENCH / "work" / args.grid)
    return args


def model_folder_problem(model: str) -> str | None:
    """Why ``--model`` cannot be the base model of a run (no ``config.json`` there), with its fix; None if it can."""
    folder = Path(model)
    if (folder / "config.json").is_file():
        return None
    fix = (f"python scripts/get_model.py --out {folder}" if folder.resolve() == DEFAULT_MODEL.resolve()
           else f"pass --model a Hugging Face model folder, or fetch the default one: "
                f"python scripts/get_model.py --out {DEFAULT_MODEL}")
    return (f"--model {folder}: no model folder there ({'no config.json in it' if folder.is_dir() else 'not found'})."
            f" Fix: {fix}")


def select(cells: list[Cell], args) -> list[Cell]:
    return [c for c in cells
            if (not args.seeds or c.seed in args.seeds) and (not args.tasks or c.task in args.tasks)
            and (not args.methods or c.method in args.methods) and (not args.sizes or c.task_rows in args.sizes)
            and (not args.ratios or c.general_ratio in args.ratios)
            and (not args.variants or (c.variant or "-") in args.variants)
            and (not args.repeats or str(c.task_repeats) in args.repeats)]


def add_constant_answers(args, out: Path) -> int:
    """Give every recorded run without them its test rows' ``constant_answer``, its ``off_constant`` split (from its
    ``row_hits``) and, where it scored validation rows, their ``val_constant_answer`` (runs recorded before runs
    kept them). No model: the task data alone.

    The rows are re-drawn as the run drew them (the task's seeded test sample of ``test_rows``; its fixed validation
    split of ``val_rows``); a run whose kept examples do not match the re-drawn test rows is left alone and named."""
    refs_of = {}

    def references(task: str, split: str, n: int) -> tuple[dict, list[str]]:
        if (task, split, n) not in refs_of:
            spec = load_task(task)
            td = data.TaskData(spec, args.shared_data, **{f"{split}_rows": n})
            refs_of[(task, split, n)] = (spec, [data.task_reference(spec, row) for row in getattr(td, split)])
        return refs_of[(task, split, n)]

    def same_test_rows(r: dict, refs: list[str]) -> bool:  # the re-drawn rows begin with the run's kept examples
        kept = [e["reference"] for e in r.get("examples") or []]
        return len(refs) == r["test_rows"] and kept == refs[:len(kept)]

    with results_lock(out):
        results = load_results(out)
        added, skipped = 0, []
        for r in results["runs"]:
            changed = False
            if r.get("val_rows") and "val_constant_answer" not in r:
                spec, refs = references(r["task"], "val", r["val_rows"])
                r["val_constant_answer"] = scoring.constant_answer(spec["metric"], refs)
                changed = True
            if r.get("test_rows") and "constant_answer" not in r:
                spec, refs = references(r["task"], "test", r["test_rows"])
                if same_test_rows(r, refs):
                    r["constant_answer"] = scoring.constant_answer(spec["metric"], refs)
                    changed = True
                else:
                    skipped.append(r["key"])
            if r.get("row_hits") and r.get("constant_answer") and "off_constant" not in r:
                spec, refs = references(r["task"], "test", r["test_rows"])
                if same_test_rows(r, refs):
                    r["off_constant"] = scoring.off_constant(spec["metric"], refs, r["row_hits"],
                                                             r["constant_answer"])
                    changed = True
            added += changed
        save_results(out, results)
    print(f"[bench] --constant-answers: added to {added} run(s)", flush=True)
    if skipped:
        print(f"[bench] test rows differ from the recorded examples, left alone: {skipped}", file=sys.stderr)
    print(report.write(out))
    return 1 if skipped else 0


def rescore_val(args, out: Path, cells: list[Cell], results: dict) -> int:
    """Add `val_score` to recorded TELL runs of the selected cells that lack it; each run is saved at once."""
    recorded = {r["key"]: r for r in results["runs"]}
    todo = [c for c in cells if c.method in TELL_METHODS and c.key in recorded
            and "val_score" not in recorded[c.key]]
    print(f"[bench] --rescore-val: {len(todo)} recorded TELL run(s) without a validation score", flush=True)
    bench, missing = (Bench(args) if todo else None), []
    for cell in todo:
        val = bench.rescore_val(cell)
        if val is None:
            missing.append(cell.key)
            continue
        with results_lock(out):  # another writer may have added runs; never drop them
            results = load_results(out)
            for r in results["runs"]:
                if r["key"] == cell.key:
                    r.update(val)
            save_results(out, results)
        print(f"[bench]   {cell.key}: val {val.get('val_score')} ({val.get('val_rows')} rows)", flush=True)
    if missing:
        print(f"[bench] no adapter on disk for {len(missing)} run(s): {missing}", file=sys.stderr)
    print(report.write(out))
    return 1 if missing else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    for key, value in axo.ENV.items():
        os.environ.setdefault(key, value)
    out = Path(args.out).resolve()
    if args.report_only:
        print(report.write(out))
        return 0
    if args.constant_answers:
        return add_constant_answers(args, out)
    import datasets

    datasets.disable_progress_bars()
    cells = select(expand(args.grid, load_grids(args.grids)), args)
    results = load_results(out)
    if args.rescore_val:
        return rescore_val(args, out, cells, results)
    done = {r["key"] for r in results["runs"]}
    todo = [c for c in cells if c.key not in done]
    if args.tell_end_from_best:  # a tell cell whose tell_best twin is still to run waits for it (stable order)
        waiting = {c.twin("tell").key for c in todo if c.method == "tell_best"}
        todo.sort(key=lambda c: c.key in waiting)
    print(f"[bench] grid {args.grid}: {len(cells)} cells, {len(cells) - len(todo)} already in {out}, "
          f"{len(todo)} to run", flush=True)
    problem = model_folder_problem(args.model) if todo else None
    if problem:  # before any cell: each would fail deep inside axolotl with a hub-name error and be retried
        print(f"[bench] {problem}", file=sys.stderr, flush=True)
        return 2
    bench = Bench(args) if todo else None  # nothing to run: no torch import, just the report
    start, slowest, ran, failed = time.perf_counter(), 0.0, 0, []
    for cell in todo:
        if cell.key in done:  # recorded in this call: a tell cell read from its tell_best twin
            continue
        if args.max_cells is not None and ran >= args.max_cells:
            print(f"[bench] --max-cells {args.max_cells} reached", flush=True)
            break
        elapsed = time.perf_counter() - start
        if args.time_budget and elapsed + slowest > args.time_budget:
            print(f"[bench] time budget: {elapsed:.0f}s used, the slowest cell took {slowest:.0f}s: stopping",
                  flush=True)
            break
        t0 = time.perf_counter()
        print(f"[bench] {cell.key} ...", flush=True)
        try:
            rec = bench.run(cell)
        except Exception as err:  # one failed cell must not lose the others; it is not recorded, so it reruns
            failed.append(cell.key)
            print(f"[bench] FAILED {cell.key}: {err}", file=sys.stderr, flush=True)
            traceback.print_exc()
            continue
        missing = [k for k in REQUIRED_KEYS if k not in rec]
        if missing:  # a bug, not a result: keep it out of the file
            failed.append(cell.key)
            print(f"[bench] FAILED {cell.key}: record lacks {missing}", file=sys.stderr, flush=True)
            continue
        ran += 1
        slowest = max(slowest, time.perf_counter() - t0)
        results = record_run(out, rec, {"grid": args.grid, "model": Path(bench.model).name,
                                        "device": bench.device_name, "profile": bench.profile})
        print(f"[bench]   score {rec['score']:.3f} ({rec['metric']})  general loss {rec['general_loss']:.3f}  "
              f"steps {rec['steps']}  train {rec['wall_s']:.0f}s  eval {rec['eval_s']:.0f}s", flush=True)
        done.add(cell.key)
        if args.tell_end_from_best and cell.method == "tell_best":
            twin = cell.twin("tell")
            if twin.key in {c.key for c in todo} and twin.key not in done:
                print(f"[bench] {twin.key} ... (the end point of {cell.key})", flush=True)
                try:
                    end = bench.end_point(cell, rec)
                    lacking = [k for k in REQUIRED_KEYS if k not in end]
                    if lacking:
                        raise RuntimeError(f"record lacks {lacking}")
                    results = record_run(out, end, {"grid": args.grid, "model": Path(bench.model).name,
                                                    "device": bench.device_name, "profile": bench.profile})
                    done.add(twin.key)
                    print(f"[bench]   score {end['score']:.3f} ({end['metric']})  general loss "
                          f"{end['general_loss']:.3f}  steps {end['steps']}  eval {end['eval_s']:.0f}s", flush=True)
                except Exception as err:  # the twin stays to run: it trains on its own
                    failed.append(twin.key)
                    print(f"[bench] FAILED {twin.key} (end point): {err}", file=sys.stderr, flush=True)
                    traceback.print_exc()
            bench.drop_checkpoints(cell)
    if results["runs"]:
        print(report.write(out))
    if failed:
        print(f"[bench] {len(failed)} cell(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
