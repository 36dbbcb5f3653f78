#!/usr/bin/env bash
# Issue 13's frontier grid on the 2-core CPU machine, in the order the session's time allows (each step resumes:
# cells already in the results file are skipped). Run alone: never beside the test suite.
#   bash bench/frontier_cpu.sh [step ...]      (default: every step in order)
set -uo pipefail
cd "$(dirname "$0")/.."
export AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled \
       TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
NOTE=${NOTE:-"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"}
bench() { PATH="$(dirname "$PY"):$PATH" "$PY" bench/run.py --grid frontier_cpu --out bench/results/frontier_cpu.json \
            --device cpu --device-note "$NOTE" "$@"; }
step_precision() { bench --seeds 0 --methods tell --ratios 3; }           # bf16 vs fp32, same cell (+ OS at 3)
step_sft()       { bench --seeds 0 --methods zero_shot sft_best; }        # SFT's curve + sft_best
step_eq3()       { bench --seeds 0 --methods tell --ratios 3 --variants eq; }  # the loss-share lever at ratio 3
step_os10()      { bench --seeds 0 --methods tell --tasks opinion_sentiment --ratios 10 --variants - eq; }
step_qf10()      { bench --seeds 0 --methods tell --tasks question_formation --ratios 10 --variants - eq; }
step_seeds()     { bench --seeds 1 2 --ratios 0 3 10 --variants - eq; }  # the same cells on seeds 1 and 2
step_ratio50()   { bench --ratios 50; }                                     # 270-620 steps a run: ~1 h each here
# Wait for a bench already running (one torch job at a time), then go on.
while pgrep -f "bench/run.py --grid frontier_cpu" > /dev/null; do sleep 20; done
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(precision sft eq3 os10 qf10 seeds ratio50)
for s in "${steps[@]}"; do echo "[frontier] step $s $(date -u +%H:%M:%S)"; "step_$s"; done
echo "[frontier] done $(date -u +%H:%M:%S)"
