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
step_precision() { bench --sizes 10 --seeds 0 --methods tell --ratios 3; }  # bf16 vs fp32, same cell (+ OS at 3)
step_sft()       { bench --sizes 10 --seeds 0 --methods zero_shot sft_best; }  # SFT's curve + sft_best
step_eq3()       { bench --sizes 10 --seeds 0 --methods tell --ratios 3 --variants eq; }  # the loss-share lever
step_os10()      { bench --sizes 10 --seeds 0 --methods tell --tasks opinion_sentiment --ratios 10 --variants - eq; }
step_rows30()    { bench --sizes 30 --seeds 0 --methods tell --ratios 3 --variants eq  # auto: 7 repeats when run, 20 now
                   bench --sizes 30 --seeds 0 --methods zero_shot sft_best; }
step_repeats()   { bench --sizes 10 --seeds 0 --tasks question_formation --methods tell --ratios 3 --variants r40
                   bench --sizes 30 --seeds 0 --tasks opinion_sentiment --methods tell --ratios 3 --variants r20; }
step_os_seeds()  { local os=(--tasks opinion_sentiment)                # opinion_sentiment, where TELL trailed
                   bench --sizes 10 --seeds 1 "${os[@]}" --methods zero_shot sft_best
                   bench --sizes 30 --seeds 1 "${os[@]}" --methods tell --ratios 3 --variants eq
                   bench --sizes 30 --seeds 1 "${os[@]}" --methods zero_shot sft_best
                   bench --sizes 10 --seeds 1 "${os[@]}" --methods tell --ratios 10 --variants -
                   bench --sizes 30 --seeds 0 1 "${os[@]}" --methods tell --ratios 3 --variants w10  # weight 10
                   bench --sizes 10 --seeds 2 "${os[@]}" --methods tell --ratios 3 --variants eq
                   bench --sizes 10 --seeds 0 --methods tell --ratios 3 --variants w10     # weight 10, 10 rows
                   bench --sizes 10 --seeds 2 "${os[@]}" --methods zero_shot sft_best; }
step_val()       { bench --rescore-val --ratios 3 --variants - eq w10 r20; }  # validation scores of runs made before
step_w10_seeds() { local qf=(--tasks question_formation) os=(--tasks opinion_sentiment)  # weight 10 vs 3, more seeds
                   bench --sizes 10 --seeds 1 "${qf[@]}" --methods tell --ratios 3 --variants w10
                   bench --sizes 10 --seeds 1 "${os[@]}" --methods tell --ratios 3 --variants w10
                   bench --sizes 30 --seeds 0 "${qf[@]}" --methods tell --ratios 3 --variants w10
                   bench --sizes 30 --seeds 2 "${os[@]}" --methods tell --ratios 3 --variants w10
                   bench --sizes 30 --seeds 2 "${os[@]}" --methods zero_shot sft_best
                   bench --sizes 30 --seeds 2 "${os[@]}" --methods tell --ratios 3 --variants eq
                   bench --sizes 10 --seeds 2 --methods tell --ratios 3 --variants w10; }
step_seeds()     { for s in 1 2; do                                    # defaults (weight 10) and sft_best, seeds 1-2
                     bench --sizes 10 --seeds $s --methods tell --ratios 3 --variants w10
                     bench --sizes 10 --seeds $s --methods zero_shot sft_best
                     bench --sizes 30 --seeds $s --methods tell --ratios 3 --variants w10
                     bench --sizes 30 --seeds $s --methods zero_shot sft_best; done; }
step_qf10()      { bench --sizes 10 --seeds 0 --methods tell --tasks question_formation --ratios 10 --variants - eq; }
step_share()     { for s in 0 1 2; do for t in opinion_sentiment question_formation; do  # sixth session: the fixed
                     bench --sizes 10 --seeds $s --tasks $t --methods tell --ratios 3 --variants share75  # loss share
                   done; done                                                                 # vs the weight
                   bench --sizes 30 --seeds 0 --tasks opinion_sentiment --methods tell --ratios 3 --variants share75
                   bench --sizes 10 --seeds 1 --tasks opinion_sentiment --methods tell --ratios 20 --variants w10; }
step_ratio20()   { bench --sizes 10 --seeds 0 --tasks opinion_sentiment --methods tell --ratios 20 --variants w10; }
step_ratio50()   { bench --sizes 10 --ratios 50; }                           # 270-620 steps a run: ~1 h each here
# Wait for a bench already running (one torch job at a time), then go on.
while pgrep -f "bench/run.py --grid frontier_cpu" > /dev/null; do sleep 20; done
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(precision sft eq3 os10 rows30 repeats os_seeds val w10_seeds seeds ratio20 share qf10 ratio50)
for s in "${steps[@]}"; do echo "[frontier] step $s $(date -u +%H:%M:%S)"; "step_$s"; done
echo "[frontier] done $(date -u +%H:%M:%S)"
