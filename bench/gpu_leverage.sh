#!/usr/bin/env bash
# Issue 24's leverage grid (`leverage` in bench/grids.yaml) on the lent GPU machine, inside ONE device call:
# one stream per (task, rows), each running seed 0, then 1, then 2 (zero_shot, sft_best, sft_scaled, tell, tell_best,
# tell_no_anchor). sft_scaled reads the adapter its sft_best twin kept in the same stream's work folder: a call
# that records sft_best but is cut before sft_scaled leaves it to be rerun with its sft_best (remove that record).
#
#   here:   python bench/stage_data.py --grid leverage                # task + general files into bench/.data
#           mkdir -p bench/.data/tokenizer && cp .cache/models/smollm2-135m-instruct/{tokenizer*,chat_template.jinja,generation_config.json} bench/.data/tokenizer/
#           KIT_NO_DATA=1 bash ../shared/gpu/make_kit.sh                # then the kit's `put` calls (.gpu/calls.txt)
#   last call (carry .gpu/stage.sh, .gpu/MANIFEST, .gpu/pN, bench/.data; timeout_s 600):
#           T0=$(date +%s); set -o pipefail; bash .gpu/stage.sh setup 2>&1 | tail -4 && export KIT_PINNED=1 &&
#           . /root/kit/env.sh && T0=$T0 bash bench/gpu_leverage.sh 2>&1 | tee $OUT/gpu.log
#   (KIT_PINNED=1: transformers 5.16.1, peft 0.20.0, accelerate 1.13.0, the CPU venv's versions)
# env: see bench/gpu_streams.sh (ONLY takes stream names like fact_verification100). THREADS defaults to 1 here:
# 18 streams on the machine's 16 cores.
GRID=leverage
RESULTS=${RESULTS:-bench/results/leverage_gpu.json}
THREADS=${THREADS:-1}
. "$(dirname "$0")/gpu_streams.sh"
NOTE=${NOTE:-"$CORES cores, 18 parallel streams"}  # bench/run.py adds the GPU's name

ONE=--tell-end-from-best   # one TELL training per cell and seed: `tell` is read from tell_best's last checkpoint
start_sync
for n in 100 30 10; do   # the largest cells first: they are the ones no CPU can afford
  for task in question_formation opinion_sentiment fact_verification disfl_qa object_counting sports_understanding; do
    stream "$task$n" "--tasks $task --sizes $n --seeds 0 $ONE" "--tasks $task --sizes $n --seeds 1 $ONE" \
                     "--tasks $task --sizes $n --seeds 2 $ONE" &
  done
done
finish
