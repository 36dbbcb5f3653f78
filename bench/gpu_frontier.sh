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
# env: T0 (the call's start, epoch seconds; default now), BUDGET (seconds from T0 until the results are packed;
#      default 545), MODEL (default $KIT_MODEL), TOKENIZER (folder copied into MODEL first; default
#      bench/.data/tokenizer, empty for none), ONLY (streams to run, of question10 opinion10 question30 opinion30
#      ratio spread ratio1; default all), OUT (what comes back:
#      frontier_gpu.json, logs.tgz). Streams run with 2 CPU threads each; the GPU is shared.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=${T0:-$(date +%s)}
BUDGET=${BUDGET:-545}
DEADLINE=$((T0 + BUDGET))
MODEL=${MODEL:-${KIT_MODEL:-/root/models/smollm2-135m-instruct}}
OUTD=${OUT:-bench/work/frontier_gpu_out}
RESULTS=${RESULTS:-bench/results/frontier_gpu.json}
LOGS=bench/work/frontier_gpu_logs
mkdir -p "$LOGS" "$OUTD" "$(dirname "$RESULTS")"
CORES=$(nproc --all)  # before OMP_NUM_THREADS=2 below, which `nproc` would report instead
export PYTHONPATH="$PWD:${PYTHONPATH:-}" OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 AXOLOTL_DO_NOT_TRACK=1 \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false \
       PYTHONUNBUFFERED=1
PY=${PY:-python3}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
NOTE=${NOTE:-"$CORES cores, 7 parallel streams"}  # bench/run.py adds the GPU's name
log() { echo "[gpu_frontier] +$(( $(date +%s) - T0 ))s $*"; }

# The same tokenizer files as the CPU machine's model folder (the kit converts the same GGUF; its tokenizer
# conversion may lose the chat template), so both machines prompt and score alike.
TOKENIZER=${TOKENIZER-bench/.data/tokenizer}
if [ -n "$TOKENIZER" ] && [ -d "$TOKENIZER" ]; then cp "$TOKENIZER"/* "$MODEL"/ && log "tokenizer files from $TOKENIZER"; fi

# One stream: its filters in order, each one bench/run.py call that a timeout stops at the deadline.
stream() {
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  for filt in "$@"; do
    local left=$((DEADLINE - 25 - $(date +%s)))
    [ "$left" -gt 45 ] || { log "$name: deadline, skipping '$filt'"; break; }
    # shellcheck disable=SC2086
    timeout -k 5 "$left" "$PY" bench/run.py --grid frontier_gpu --out "$RESULTS" --work "bench/work/frontier_gpu/$name" \
      --model "$MODEL" --shared-data bench/.data --device-note "$NOTE" $filt >> "$LOGS/$name.log" 2>&1
    log "$name: '$filt' rc $?"
  done
}

# Copy the results to $OUT as they grow: a call cut short still brings back every finished cell.
sync_out() { [ -f "$RESULTS" ] && cp "$RESULTS" "$OUTD/.frontier_gpu.json" && mv "$OUTD/.frontier_gpu.json" "$OUTD/frontier_gpu.json"; }
( while sleep 10; do sync_out; done ) & SYNC=$!

log "model $MODEL on ${GPU:-no GPU}; deadline in $((DEADLINE - $(date +%s)))s"
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
wait $(jobs -p | grep -v "^$SYNC\$")
kill "$SYNC" 2>/dev/null
pkill -f "axolotl.cli" 2>/dev/null   # a train the deadline cut: its runner is gone
sync_out
tar czf "$OUTD/logs.tgz" "$LOGS" $(ls bench/work/frontier_gpu/*/cells/*/*.log 2>/dev/null) 2>/dev/null
log "done: $("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs']), 'runs')" "$RESULTS" 2>/dev/null)"
