#!/usr/bin/env bash
# Set up and run the test suite: axolotl 0.19 (Python 3.11), then axolotl 0.21 (Python 3.12) when that
# Python is installed. Extra arguments go to pytest, e.g. `bash scripts/test.sh -k plan`.
#   TELL_AXOLOTL=0.19 bash scripts/test.sh     # one version only
set -euo pipefail
cd "$(dirname "$0")/.."
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false

versions="${TELL_AXOLOTL:-0.19 0.21}"
for version in $versions; do
  if [ "$version" = 0.21 ] && ! bash scripts/setup.sh 0.21; then
    if [ -n "${TELL_AXOLOTL:-}" ] || [ -n "${CI:-}" ]; then exit 1; fi
    echo "test: skipping axolotl 0.21 (no Python 3.12 here)"; continue
  fi
  bash scripts/setup.sh "$version"
  venv=.venv; [ "$version" = 0.21 ] && venv=.venv-0.21
  echo "== tests with $($venv/bin/python -c 'import axolotl, sys; print(f"axolotl {axolotl.__version__}, Python {sys.version.split()[0]}")')"
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
done
