"""`axolotl-tell preview | infer | bake | anchor`: check the mix before training, serve with the trained anchor.

A user error (a bad config, data, anchor or folder) prints its message and exits 2; `--debug` shows the traceback.

    axolotl-tell [--debug] preview CONFIG [--examples 1]
    axolotl-tell anchor CONFIG [--regenerate] [--show-prompt]
    axolotl-tell infer CONFIG --prompt TEXT [--input TEXT] [--max-new-tokens 64] [--show-prompt] [--adapter DIR]
                       [--dataset-index 0] [--base-model-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

OFFLINE_DEFAULTS = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def _load_cfg(path: str):
    from axolotl.cli.config import load_cfg

    return load_cfg(path)


def _marked(text: str, anchor: str) -> str:
    return text.replace(anchor, f"«ANCHOR»{anchor}«/ANCHOR»")


def preview(args) -> int:
    """Plan (or load) the mix without training; print the table, examples, and write the timeline plot."""
    import numpy as np

    from axolotl_tell import compat
    from axolotl_tell.plots import TIMELINE_FILE, plot_timeline
    from axolotl_tell.prepare import SOURCE_COLUMN, prepare_tell_datasets
    from axolotl_tell.report import format_table, write_dry_run_report

    cfg = _load_cfg(args.config)
    tokenizer = compat.load_tokenizer(cfg)
    prepared = prepare_tell_datasets(cfg, tokenizer)
    report = prepared.report
    report_path = write_dry_run_report(cfg.output_dir, prepared)  # never overwrites a trained run's files
    print(format_table(report))
    sources = np.asarray(prepared.train_dataset[SOURCE_COLUMN])
    kinds = {s["id"]: s["kind"] for s in report["sources"]}
    anchor = report["anchor"]["text"]
    for kind in ("task", "general"):
        rows = [i for i, s in enumerate(sources) if kinds[int(s)] == kind][: args.examples]
        for i in rows:
            row = prepared.train_dataset[i]
            cut = next((k for k, v in enumerate(row["labels"]) if v != -100), len(row["labels"]))
            print(f"\n--- first {kind} row (position {i}); prompt, then [trained] answer ---")
            print(_marked(tokenizer.decode(row["input_ids"][:cut]), anchor) + "[" +
                  tokenizer.decode(row["input_ids"][cut:]) + "]")
    task_positions = np.flatnonzero([kinds[int(s)] == "task" for s in sources])
    rows_per_step = int(cfg.micro_batch_size or 1) * int(cfg.gradient_accumulation_steps or 1)
    plot_dir = Path(cfg.output_dir) if report_path.parent == Path(cfg.output_dir) else report_path.parent
    plot = plot_timeline(plot_dir / TIMELINE_FILE, task_positions, len(sources), rows_per_step)
    print(f"\ntimeline plot: {plot}\nreport: {report_path}")
    return 0


def infer(args) -> int:
    """Generate greedily from the saved adapter, with the anchor exactly as in training."""
    from axolotl_tell.generate import generate, load_model
    from axolotl_tell.prompting import load_spec, prompt_ids, row_from_text

    from axolotl_tell.generate import check_adapter_folder

    cfg = _load_cfg(args.config)
    folder = args.adapter or cfg.output_dir
    if args.base_model_only:
        spec = _spec_for_base_model(cfg, folder)
    else:
        check_adapter_folder(folder)  # first: "no adapter" says more than "no tell.json"
        spec = load_spec(folder)
    entry = _task_entry(spec, args.dataset_index, folder)
    model, tokenizer = load_model(cfg.base_model, adapter=None if args.base_model_only else folder,
                                  trust_remote_code=bool(cfg.get("trust_remote_code")))  # the config's, only
    row = row_from_text(entry, args.prompt, args.input or "")
    ids = prompt_ids(spec, tokenizer, row, args.dataset_index)
    if args.show_prompt:
        print("=== prompt (exactly as in training) ===")
        print(tokenizer.decode(ids))
        print(f"=== {len(ids)} tokens: {json.dumps(ids)}")
        print("=== completion ===")
    print(generate(model, tokenizer, [ids], max_new_tokens=args.max_new_tokens)[0])
    return 0


def _spec_for_base_model(cfg, folder) -> dict:
    """`--base-model-only`: the trained run's tell.json if there is one, else the spec training would write for
    this config (the mix is planned, or loaded from `axolotl preprocess`), so the base model gets the same prompt."""
    from pathlib import Path

    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets
    from axolotl_tell.prompting import load_spec
    from axolotl_tell.report import INFERENCE_FILE, inference_spec

    if (Path(folder) / INFERENCE_FILE).is_file():
        return load_spec(folder)
    return inference_spec(prepare_tell_datasets(cfg, compat.load_tokenizer(cfg)).report, cfg)


def _task_entry(spec: dict, index: int, folder) -> dict:
    from axolotl_tell.prompting import TellSpecError

    entries = spec["task_datasets"]
    if not 0 <= index < len(entries):
        raise TellSpecError(f"[axolotl_tell] `--dataset-index {index}`: the tell.json in {folder} has "
                            f"{len(entries)} task dataset entr{'y' if len(entries) == 1 else 'ies'}. Fix: pass "
                            f"`--dataset-index` from 0 to {len(entries) - 1} (the order of `tell_task_datasets`).")
    return entries[index]


def anchor(args) -> int:
    """Print the anchor a run would use; `tell_anchor: auto` generates it (and caches it for the run)."""
    from axolotl_tell.anchor_config import resolve_anchor
    from axolotl_tell.auto_anchor import generate_anchor, is_auto
    from axolotl_tell.prepare import _task_entry_cfg, task_raw_data

    cfg = _load_cfg(args.config)
    if not is_auto(cfg):
        found = resolve_anchor(cfg)
        print(f"anchor (source: {found.source}):\n\n{found.text}")
        return 0
    entries = [_task_entry_cfg(dict(e), cfg) for e in cfg.tell_task_datasets or []]
    result = generate_anchor(cfg, task_raw_data(cfg, entries), placement=cfg.get("tell_anchor_placement") or "auto",
                             use_cache=not args.regenerate)
    if args.show_prompt:
        print(f"=== generation prompt ===\n{result.prompt}\n=== raw output ===\n{result.raw}\n===")
    meta = result.anchor.meta or {}
    how = "reused from" if result.reused else "generated, saved to"
    print(f"anchor (source: auto; {how} {result.cache_file}):\n\n{result.anchor.text}\n")
    print(f"model {meta.get('model')}  examples {meta.get('examples')} (dataset, row): "
          f"{meta.get('example_rows')}  seed {meta.get('seed')}  max tokens {meta.get('max_tokens')}")
    print("Training with this config reuses it. To edit it, paste it into `tell_anchor:`.")
    return 0


def bake(args) -> int:
    """Write the trained anchor into a saved chat template (e.g. after `axolotl merge-lora` on axolotl 0.19)."""
    from axolotl_tell.bake import bake_anchor
    from axolotl_tell.prompting import load_spec

    cfg = _load_cfg(args.config)
    folder = args.into or cfg.output_dir
    bake_anchor(folder, load_spec(cfg.output_dir))
    print(f"anchor baked into the chat template in {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axolotl-tell", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a user error too")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preview", help="plan the mix without training; print and plot it")
    p.add_argument("config")
    p.add_argument("--examples", type=int, default=1, help="rows of each kind to print")
    p.set_defaults(func=preview)
    p = sub.add_parser("infer", help="generate with the trained anchor")
    p.add_argument("config")
    p.add_argument("--prompt", required=True, help="the instruction / user turn")
    p.add_argument("--input", help="alpaca-style `input` field")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--show-prompt", action="store_true", help="print the exact prompt text and ids first")
    p.add_argument("--adapter", help="folder with the adapter and tell.json (default: the config's output_dir)")
    p.add_argument("--dataset-index", type=int, default=0, help="which tell_task_datasets entry's format to use")
    p.add_argument("--base-model-only", action="store_true",
                   help="generate with the untrained base model (no adapter needed; e.g. a baseline after preprocess)")
    p.set_defaults(func=infer)
    p = sub.add_parser("bake", help="write the anchor into a saved chat template as the default system turn")
    p.add_argument("config")
    p.add_argument("--into", help="model folder to rewrite (default: the config's output_dir)")
    p.set_defaults(func=bake)
    p = sub.add_parser("anchor", help="print the anchor the run would use (`tell_anchor: auto`: generate it)")
    p.add_argument("config")
    p.add_argument("--regenerate", action="store_true", help="ignore a cached auto anchor and generate it again")
    p.add_argument("--show-prompt", action="store_true", help="print the generation prompt and raw output too")
    p.set_defaults(func=anchor)
    return parser


USER_ERROR_EXIT = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user fixes in a config, data file, anchor or folder: each names the problem and the fix. Anything
    else is a bug and keeps its traceback."""
    from pydantic import ValidationError  # Axolotl's config schema, with the plugin's checks inside

    from axolotl_tell.anchor import AnchorError
    from axolotl_tell.args import TellConfigError
    from axolotl_tell.bake import BakeError
    from axolotl_tell.cpu_precision import CpuPrecisionError
    from axolotl_tell.datacheck import TellDataError
    from axolotl_tell.generate import ModelFolderError
    from axolotl_tell.plan import PlanError
    from axolotl_tell.plots import PlotError
    from axolotl_tell.prompting import TellSpecError

    return (ValidationError, FileNotFoundError, TellConfigError, AnchorError, BakeError, CpuPrecisionError,
            TellDataError, ModelFolderError, PlanError, PlotError, TellSpecError)


def main(argv=None) -> int:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if args.debug or not isinstance(err, _user_errors()):
            raise
        print(f"axolotl-tell {args.command}: {_message(err)}\n(--debug shows the traceback)", file=sys.stderr)
        return USER_ERROR_EXIT


def _message(err: Exception) -> str:
    """A config schema error's own messages (pydantic's text repeats the whole config as `input_value`)."""
    from pydantic import ValidationError

    if not isinstance(err, ValidationError):
        return str(err)
    lines = []
    for e in err.errors():
        where = ".".join(str(part) for part in e.get("loc") or ())
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        lines.append(f"`{where}`: {msg}" if where else msg)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())


def _click_command():
    """`axolotl tell <preview|infer|bake|anchor> ...` through Axolotl's `axolotl.cli_commands` entry point."""
    import click

    @click.command("tell", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                             "help_option_names": []})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def tell(args):
        """TELL plugin tools: preview | infer | bake | anchor (see `axolotl-tell --help`)."""
        sys.exit(main(list(args)))

    return tell


def __getattr__(name):
    if name == "tell_command":
        return _click_command()
    raise AttributeError(name)
