# Sourced by bench/gpu_frontier.sh and bench/gpu_leverage.sh: parallel streams of bench/run.py cells inside ONE
# device call. Streams append to one results file (bench/run.py locks it); a deadline stops them so the call
# returns inside its 10-minute limit with every finished cell. A cell cut by the deadline is not recorded; a rerun
# resumes it.
#
# Before sourcing, set GRID (grids.yaml name) and RESULTS (results JSON). env: T0 (the call's start, epoch seconds;
# default now), BUDGET (seconds from T0 until the results are packed; default 545), MODEL (default $KIT_MODEL),
# TOKENIZER (folder copied into MODEL first; default bench/.data/tokenizer, empty for none), ONLY (names of the
# streams to run; default all), THREADS (CPU threads per stream; default 2), OUT (what comes back: the results
# JSON and logs.tgz).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T0=${T0:-$(date +%s)}
BUDGET=${BUDGET:-545}
DEADLINE=$((T0 + BUDGET))
MODEL=${MODEL:-${KIT_MODEL:-/root/models/smollm2-135m-instruct}}
OUTD=${OUT:-bench/work/${GRID}_gpu_out}
LOGS=bench/work/${GRID}_gpu_logs
THREADS=${THREADS:-2}
mkdir -p "$LOGS" "$OUTD" "$(dirname "$RESULTS")"
CORES=$(nproc --all)  # before OMP_NUM_THREADS below, which `nproc` would report instead
export PYTHONPATH="$PWD:${PYTHONPATH:-}" OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS AXOLOTL_DO_NOT_TRACK=1 \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false \
       PYTHONUNBUFFERED=1
PY=${PY:-python3}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
log() { echo "[gpu $GRID] +$(( $(date +%s) - T0 ))s $*"; }

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
    timeout -k 5 "$left" "$PY" bench/run.py --grid "$GRID" --out "$RESULTS" --work "bench/work/${GRID}_gpu/$name" \
      --model "$MODEL" --shared-data bench/.data --device-note "$NOTE" $filt >> "$LOGS/$name.log" 2>&1
    log "$name: '$filt' rc $?"
  done
}

# Copy the results to $OUT as they grow: a call cut short still brings back every finished cell.
sync_out() {
  [ -f "$RESULTS" ] && cp "$RESULTS" "$OUTD/.results.json" && mv "$OUTD/.results.json" "$OUTD/$(basename "$RESULTS")"
}
start_sync() { ( while sleep 10; do sync_out; done ) & SYNC=$!; log "model $MODEL on ${GPU:-no GPU}; deadline in $((DEADLINE - $(date +%s)))s"; }

finish() {
  wait $(jobs -p | grep -v "^$SYNC\$")
  kill "$SYNC" 2>/dev/null
  pkill -f "axolotl.cli" 2>/dev/null   # a train the deadline cut: its runner is gone
  sync_out
  tar czf "$OUTD/logs.tgz" "$LOGS" $(ls bench/work/${GRID}_gpu/*/cells/*/*.log 2>/dev/null) 2>/dev/null
  log "done: $("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs']), 'runs')" "$RESULTS" 2>/dev/null)"
}
