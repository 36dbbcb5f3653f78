#!/usr/bin/env bash
# Issue 24's leverage grid on the 2-core CPU (grid `leverage_cpu`), one cell per call so other heavy jobs waiting on
# the same lock (flock /tmp/torch.lock) can run between cells; resumable (cells in the results file are skipped).
# Never beside the test suite.   bash bench/leverage_cpu.sh [step ...]   (default: every step in order)
set -uo pipefail
cd "$(dirname "$0")/.."
export AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled \
       TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=$(nproc)
PY=${PY:-.venv/bin/python}
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx512_bf16|amx_bf16' | sort -u | xargs)
NOTE=${NOTE:-"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, bf16: ${flags:-not native}"}
OUT=bench/results/leverage_cpu.json
cells() {  # every cell of one filter, one bench/run.py call each (a lock per cell)
  while :; do
    before=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs']))" "$OUT" 2>/dev/null || echo 0)
    flock /tmp/torch.lock env PATH="$(dirname "$PY"):$PATH" "$PY" bench/run.py --grid leverage_cpu --out "$OUT" \
      --device cpu --device-note "$NOTE" --max-cells 1 "$@" | grep -E "^\[bench\] (grid|.*score|FAILED)"
    after=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs']))" "$OUT" 2>/dev/null || echo 0)
    [ "$after" -gt "$before" ] || break   # nothing left (or a cell failed: its error is in the output above)
  done
}
step_qf100()  { cells --tasks question_formation --sizes 100 --seeds 0; }   # the first cell above 30 rows
step_new10()  { for t in sports_understanding object_counting fact_verification disfl_qa; do
                  cells --tasks "$t" --sizes 10 --seeds 0; done; }            # the four new tasks, 10 rows
step_os100()  { cells --tasks opinion_sentiment --sizes 100 --seeds 0; }
step_new30()  { for t in sports_understanding object_counting; do         # 30 rows, where the GPU runs trailed:
                  cells --tasks "$t" --sizes 30 --seeds 0 --methods tell tell_best --repeats auto  # TELL first,
                  cells --tasks "$t" --sizes 30 --seeds 0 --repeats auto; done; }     # then SFT and its peers
step_seeds30() { for s in 1 2; do       # the seed spread at 30 rows, on object_counting: the one new task where a
                  cells --tasks object_counting --sizes 30 --seeds "$s" \
                    --methods tell tell_best sft_best sft_scaled; done; }  # method clears the constant answer at seed 0
step_reps40()  { cells --tasks object_counting --sizes 30 --seeds 1 --methods tell; }  # the r=40 lever cell (grids)
step_seed2_30() { cells --tasks object_counting --sizes 30 --seeds 2 --methods sft_best tell; }
step_oc100()  { cells --tasks object_counting --sizes 100 --seeds 0 --methods tell sft_best sft_scaled zero_shot \
                  tell_best; }   # 100 rows on the one new task above its constant answer at 30 rows (auto: 6 repeats)
step_os100s() { cells --tasks opinion_sentiment --sizes 100 --seeds 0 --methods tell sft_best sft_scaled zero_shot; }
step_os100tb() { cells --tasks opinion_sentiment --sizes 100 --seeds 0 --methods tell_best; }  # completes os100s
step_oc100s1() { cells --tasks object_counting --sizes 100 --seeds 1 --methods tell tell_best sft_best; }  # seed spread
step_sp100()  { cells --tasks sports_understanding --sizes 100 --seeds 0 --methods tell tell_best sft_best zero_shot; }
step_fv100()  { cells --tasks fact_verification --sizes 100 --seeds 0 --methods tell tell_best sft_best zero_shot; }
step_oc100s2() { cells --tasks object_counting --sizes 100 --seeds 2 --methods tell sft_best tell_best; }  # 3rd seed
step_dq100()  { cells --tasks disfl_qa --sizes 100 --seeds 0 --methods tell tell_best sft_best zero_shot; }
step_dev10()  { for t in question_formation opinion_sentiment; do    # tell_best on the two tasks the defaults were
                  cells --tasks "$t" --sizes 10 --seeds 0 --methods sft_best tell tell_best; done; }  # chosen on
step_qf100tb() { cells --tasks question_formation --sizes 100 --seeds 0 --methods tell_best; }  # completes qf100
step_dev30()  { for t in question_formation opinion_sentiment; do    # the same at 30 rows
                  cells --tasks "$t" --sizes 30 --seeds 0 --methods sft_best tell tell_best --repeats auto; done; }
step_qf30tb() { cells --tasks question_formation --sizes 30 --seeds 0 --methods tell_best; }  # completes dev30's qf
step_os30()   { cells --tasks opinion_sentiment --sizes 30 --seeds 0 --methods tell sft_best tell_best --repeats auto; }
step_new30b() { for t in fact_verification disfl_qa; do    # the last two tasks at 30 rows (README: every task, every
                  cells --tasks "$t" --sizes 30 --seeds 0 --methods tell tell_best sft_best zero_shot \
                    --repeats auto; done; }  # size)
step_reps100() { for t in object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa; do        # rule 4's lever at 100 rows, seed 0 on all six (rules 1-2),
                  cells --tasks "$t" --sizes 100 --seeds 0 --methods tell; done; }  # 12 repeats vs auto's 6
step_w3_100() { for t in ${TASKS:-object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa}; do   # rule 4's weight lever at 100 rows, seed 0, in the planned order
                  cells --tasks "$t" --sizes 100 --seeds 0 --methods tell --variants w3; done; }  # (TASKS=...: a part)
step_dev10s() { for s in 1 2; do for t in question_formation opinion_sentiment; do   # seeds 1-2 on the dev tasks
                  cells --tasks "$t" --sizes 10 --seeds "$s" --methods sft_best tell tell_best; done; done; }  # 10 rows
step_oc30tb2() { cells --tasks object_counting --sizes 30 --seeds 2 --methods tell_best; }  # completes oc 30's 3 seeds
step_new10s() { for s in 1 2; do for t in ${TASKS:-object_counting sports_understanding fact_verification disfl_qa}; do
                  cells --tasks "$t" --sizes 10 --seeds "$s" --methods sft_best tell tell_best \
                    --tell-end-from-best; done; done; }  # seeds 1-2; TELL read from tell_best's last checkpoint
step_lr100() { for t in ${TASKS:-object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa}; do   # rule 4's learning-rate lever at 100 rows, seed 0: 2e-4 vs 5e-4
                  cells --tasks "$t" --sizes 100 --seeds 0 --methods tell --variants lr2e4; done; }
step_tb12_100() { for t in ${TASKS:-object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa}; do   # rule 6's lever at 100 rows, seed 0: tell_best over 12 repeats
                  cells --tasks "$t" --sizes 100 --seeds 0 --methods tell_best tell --repeats 12 --variants - \
                    --tell-end-from-best; done; }   # (and the 12-repeat tell end point where it is missing)
step_g10_100() { for t in ${TASKS:-object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa}; do   # rule 4's last lever at 100 rows, seed 0: ratio 10 vs 3
                  cells --tasks "$t" --sizes 100 --seeds 0 --methods tell --variants g10; done; }
step_r40_30() { for t in ${TASKS:-object_counting opinion_sentiment question_formation sports_understanding \
                  fact_verification disfl_qa}; do   # rule 4's first lever at 30 rows on every task and seed (the
                  cells --tasks "$t" --sizes 30 --seeds 0 1 2 --methods tell --repeats 40; done; }  # 40 vs 20: failed
step_na10() { for t in ${TASKS:-opinion_sentiment question_formation}; do   # the plain-mixing peer on the two
                  cells --tasks "$t" --sizes 10 --seeds 0 1 2 --methods tell_no_anchor; done; }  # 10-row cells that
                                # rank methods (above the constant answer, under the ceiling), every seed TELL has
seeds_at() { local n=$1; shift      # sft_best, TELL and tell_best at n rows on each of SEEDS (default 1 2) and
  for s in ${SEEDS:-1 2}; do for t in ${TASKS:-$*}; do   # TASKS (default: the tasks given), TELL read from tell_best;
    cells --tasks "$t" --sizes "$n" --seeds "$s" --methods sft_best tell tell_best --repeats auto --variants - \
      --tell-end-from-best; done; done; }   # the default cells only: the lever blocks (12 repeats, w3, lr2e4) share
                                            # the method `tell` and every seed at 100 rows
step_s30()  { seeds_at 30 sports_understanding opinion_sentiment fact_verification disfl_qa \
                question_formation; }   # seeds 1-2 at 30 rows (object_counting has 3), cheapest first
step_s100() { seeds_at 100 opinion_sentiment question_formation; }   # seeds 1-2 at 100 rows on the two cells above
                                                                       # their floors with one seed so far
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(qf100 new10 os100)
for s in "${steps[@]}"; do echo "== leverage_cpu step $s"; "step_$s"; done
.venv/bin/python bench/run.py --report-only --out "$OUT" > /dev/null
