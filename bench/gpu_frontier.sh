#!/usr/bin/env bash
# Issue 13's frontier on the lent GPU machine (grid `frontier_gpu` in bench/grids.yaml), inside ONE device call:
# parallel streams of cells append to one results file, and a deadline stops them so the call returns, inside its
# 10-minute limit, with every finished cell. A cell cut by the deadline is not recorded; rerunning resumes.
#
#   here:   python bench/stage_data.py --grid frontier_gpu        # task + general files into bench/.data
#           mkdir -p bench/.data/tokenizer && cp .cache/models/smollm2-135m-instruct/{tokenizer*,chat_template.jinja,generation_config.json} bench/.data/tokenizer/
#           KIT_NO_DATA=1 bash ../shared/gpu/make_kit.sh           # then the kit's `put` calls (.gpu/calls.txt)
#   last call (carry .gpu/stage.sh, .gpu/MANIFEST, .gpu/pN, bench/.data; timeout_s 600):
#           T0=$(date +%s); set -o pipefail; bash .gpu/stage.sh setup 2>&1 | tail -4 && export KIT_PINNED=1 &&
#           . /root/kit/env.sh && T0=$T0 bash bench/gpu_frontier.sh 2>&1 | tee $OUT/gpu.log
#   (KIT_PINNED=1: transformers 5.16.1, peft 0.20.0, accelerate 1.13.0, the CPU venv's versions)
#
# env: see bench/gpu_streams.sh; ONLY takes stream names of question10 opinion10 question30 opinion30 ratio spread
#      ratio1. Streams run with 2 CPU threads each; the GPU is shared.
GRID=frontier_gpu
RESULTS=${RESULTS:-bench/results/frontier_gpu.json}
. "$(dirname "$0")/gpu_streams.sh"
NOTE=${NOTE:-"$CORES cores, 7 parallel streams"}  # bench/run.py adds the GPU's name

start_sync
for task in question_formation opinion_sentiment; do
  for n in 10 30; do   # the defaults against sft_best, seed by seed
    stream "${task%%_*}$n" "--tasks $task --sizes $n --seeds 0 --ratios 0 3 --variants -" \
                           "--tasks $task --sizes $n --seeds 1 --ratios 0 3 --variants -" \
                           "--tasks $task --sizes $n --seeds 2 --ratios 0 3 --variants -" &
  done
done
stream ratio "--sizes 10 --seeds 0 --ratios 10" "--sizes 10 --seeds 0 --ratios 50" "--sizes 10 --seeds 0 --ratios 20" &
stream spread "--sizes 10 --seeds 0 --variants random" "--sizes 30 --seeds 0 --ratios 10" \
              "--sizes 10 --seeds 1 --variants random" &
stream ratio1 "--sizes 10 --seeds 1 --ratios 10" "--sizes 10 --seeds 1 --ratios 50" "--sizes 10 --seeds 2 --ratios 10" &
finish
