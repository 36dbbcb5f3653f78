#!/usr/bin/env bash
# Create (or reuse) a virtual environment with Axolotl and this plugin.
#
#   bash scripts/setup.sh            # .venv       : Python 3.11 + axolotl 0.19.0 + CPU torch 2.13.0
#   bash scripts/setup.sh 0.21       # .venv-0.21  : Python 3.12 + axolotl 0.21.0 (torch from PyPI)
#
# Idempotent: a finished environment holds .tell-setup-done with the exact request; same request -> no work.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-0.19}"
case "$target" in
  0.19) venv=.venv;      py_want=3.11; pkgs=(torch==2.13.0 axolotl==0.19.0); ds="deepspeed>=0.18.6,<0.19" ;;
  0.21) venv=.venv-0.21; py_want=3.12; pkgs=(axolotl==0.21.0);                ds="deepspeed>=0.18.6,<0.20" ;;
  *) echo "usage: $0 [0.19|0.21]" >&2; exit 2 ;;
esac

find_python() {  # a python$1 on PATH, or one pyenv knows
  local want="$1" p
  for p in "python$want" "$(command -v pyenv >/dev/null && pyenv root 2>/dev/null)/versions/$want"*/bin/python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

python=$(find_python "$py_want") || { echo "setup: Python $py_want not found (install it, e.g. with pyenv)" >&2; exit 3; }
request="$python ${pkgs[*]} $ds $(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$venv/.tell-setup-done" ] && [ "$(cat "$venv/.tell-setup-done")" = "$request" ]; then
  exit 0
fi

# uv ships its own CA roots; behind a TLS-inspecting proxy it needs the system bundle
if [ -z "${SSL_CERT_FILE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
fi
command -v uv >/dev/null 2>&1 || "$python" -m pip install -q uv
uv=$(command -v uv || echo "$python -m uv")
links=()
# pip's config may name a local wheel folder (e.g. the CPU torch wheel); uv does not read pip's config
wheel_dir=$(pip config get global.find-links 2>/dev/null || true)
[ -n "$wheel_dir" ] && [ -d "$wheel_dir" ] && links=(--find-links "$wheel_dir")

echo "setup: $venv with $python: ${pkgs[*]} + $ds + axolotl_tell[test]"
$uv venv -q --seed --allow-existing -p "$python" "$venv"   # --seed: pip inside (get_model.py downloads with it)
$uv pip install -q -p "$venv/bin/python" --compile-bytecode "${links[@]}" "${pkgs[@]}" -e ".[test]"
# DeepSpeed (Axolotl's `deepspeed` extra range): its setup.py imports torch, so it builds against the torch above
$uv pip install -q -p "$venv/bin/python" --no-build-isolation "${links[@]}" "$ds"
echo "$request" > "$venv/.tell-setup-done"
