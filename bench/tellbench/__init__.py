"""The TELL leverage benchmark (see BENCHMARKS.md). Entry point: ``python bench/run.py``.

Modules, in the order a cell goes through them:

* ``spec``    task specs (``bench/tasks/*.yaml``) and grids (``bench/grids.yaml``) -> cells
* ``data``    task subsets, validation/test rows and the general pool, written as chat JSONL
* ``configs`` the Axolotl YAML of each method (the plugin for TELL, plain Axolotl for the baselines)
* ``axo``     ``axolotl preprocess|train`` as a subprocess; steps and token counts of what was trained
* ``scoring`` task metric from training-exact prompts, held-out general loss, general generation check
* ``report``  results table (markdown) and PNG plots
"""

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
