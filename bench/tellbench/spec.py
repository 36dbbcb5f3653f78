"""Task specs and grids: both are data files, expanded here into cells."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tellbench import BENCH

TASKS_DIR = BENCH / "tasks"
GRIDS_FILE = BENCH / "grids.yaml"

METHODS = ("zero_shot", "sft", "sft_matched", "sft_best", "sft_scaled", "tell", "tell_best", "tell_auto_anchor",
           "tell_no_anchor", "sft_anchor")
ANCHORED_METHODS = ("zero_shot", "tell", "tell_best", "tell_auto_anchor", "sft_anchor")  # scored anchored
TELL_METHODS = ("tell", "tell_best", "tell_auto_anchor")  # trained through the plugin; scored with its tell.json
TASK_KEYS = {"name", "description", "train", "test", "user_field", "assistant_field", "answer_json_field", "metric",
             "anchor", "max_new_tokens", "test_rows", "val_rows", "sizes", "general_leak_regex"}
REQUIRED_TASK_KEYS = {"name", "train", "test", "user_field", "assistant_field", "metric", "anchor"}
BLOCK_KEYS = {"tasks", "sizes", "methods", "seeds", "task_repeats", "general_ratio", "test_rows", "val_rows",
              "max_new_tokens", "train", "general", "variant", "tell", "sft_curve"}


class SpecError(ValueError):
    pass


def load_task(name_or_path: str) -> dict:
    """A task spec from ``bench/tasks/<name>.yaml`` (or a path to a YAML file), validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TASKS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SpecError(f"no task spec {path}; add bench/tasks/<name>.yaml (see question_formation.yaml)")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = REQUIRED_TASK_KEYS - set(spec)
    unknown = set(spec) - TASK_KEYS
    if missing or unknown:
        raise SpecError(f"{path}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    from axolotl_tell.metrics import METRICS

    if spec["metric"] not in METRICS:
        raise SpecError(f"{path}: metric {spec['metric']!r} is not one of {sorted(METRICS)}")
    spec.setdefault("answer_json_field", None)
    spec.setdefault("max_new_tokens", 32)
    spec.setdefault("test_rows", 200)
    spec.setdefault("val_rows", 50)
    spec.setdefault("sizes", [10])
    spec.setdefault("general_leak_regex", None)
    spec["spec_file"] = str(path)
    return spec


def load_grids(path: Path = GRIDS_FILE) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    task_rows: int
    seed: int
    task_repeats: int | str  # requested: an integer or "auto"
    general_ratio: float
    overrides: dict = field(default_factory=dict, compare=False, hash=False)
    variant: str = ""  # a block's name for its `train`/`tell` settings: part of the key, so variants never collide

    @property
    def task_name(self) -> str:
        """The task's name: ``question_formation``, also when the grid gives the spec as a path to its YAML."""
        path = Path(self.task)
        return path.stem if path.suffix in (".yaml", ".yml") or len(path.parts) > 1 else self.task

    @property
    def key(self) -> str:
        key = (f"{self.task}|{self.method}|n={self.task_rows}|seed={self.seed}|"
               f"r={self.task_repeats}|g={self.general_ratio:g}")
        return key + (f"|v={self.variant}" if self.variant else "")

    @property
    def slug(self) -> str:
        slug = (f"{self.task_name}-{self.method}-n{self.task_rows}-s{self.seed}-r{self.task_repeats}-"
                f"g{self.general_ratio:g}")
        return slug + (f"-{self.variant}" if self.variant else "")

    def twin(self, method: str) -> "Cell":
        """The cell of ``method`` on the same data, seed, repeats, ratio and block settings as this one."""
        return Cell(self.task, method, self.task_rows, self.seed, self.task_repeats, self.general_ratio,
                    self.overrides, self.variant)

    def tell_twin(self) -> "Cell":
        """The TELL cell this cell is matched to (tell_no_anchor and sft_matched reuse its plan)."""
        return self.twin("tell")

    def sft_best_twin(self) -> "Cell":
        """The ``sft_best`` cell whose chosen adapter an ``sft_scaled`` cell scales."""
        return self.twin("sft_best")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expand(grid_name: str, grids: dict | None = None) -> list[Cell]:
    """All cells of a grid, in run order (task, size, seed, then methods: TELL before what is matched to it)."""
    grids = grids or load_grids()
    if grid_name not in grids["grids"]:
        raise SpecError(f"no grid {grid_name!r} in {GRIDS_FILE}; have {sorted(grids['grids'])}")
    cells, seen = [], set()
    for block in grids["grids"][grid_name]:
        unknown = set(block) - BLOCK_KEYS
        if unknown:
            raise SpecError(f"grid {grid_name}: unknown keys {sorted(unknown)}")
        overrides = {k: copy.deepcopy(block[k]) for k in ("test_rows", "val_rows", "max_new_tokens", "train",
                                                          "general", "tell", "sft_curve") if k in block}
        variant = str(block.get("variant") or "")
        if variant and not variant.replace("_", "").replace(".", "").isalnum():
            raise SpecError(f"grid {grid_name}: variant {variant!r}: use letters, digits, '_' and '.' only")
        bad_tell = [k for k in block.get("tell") or {} if not str(k).startswith("tell_")]
        if bad_tell:
            raise SpecError(f"grid {grid_name}: `tell` holds plugin keys only (tell_*), not {bad_tell}")
        methods = _as_list(block["methods"])
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise SpecError(f"grid {grid_name}: unknown methods {bad}; use {METHODS}")
        # TELL first: tell_no_anchor and sft_matched reuse its plan
        methods = sorted(methods, key=lambda m: (m != "tell", METHODS.index(m)))
        for task in _as_list(block["tasks"]):
            spec = load_task(task)
            sizes = _as_list(block.get("sizes", spec["sizes"]))
            for size, seed, repeats, ratio in itertools.product(
                    sizes, _as_list(block.get("seeds", [0])), _as_list(block.get("task_repeats", ["auto"])),
                    _as_list(block.get("general_ratio", [20]))):
                for method in methods:
                    cell = Cell(task, method, int(size), int(seed), repeats if repeats == "auto" else int(repeats),
                                float(ratio), overrides, variant)
                    if cell.key not in seen:
                        seen.add(cell.key)
                        cells.append(cell)
    return cells
