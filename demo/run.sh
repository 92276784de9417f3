#!/usr/bin/env bash
# The demo on a machine with nothing but Python 3.10+: bash demo/run.sh [python -m demo options]
# Creates .venv (the pack's venv, as .ci/run makes it) with CPU torch 2.13.0 and requirements.txt,
# then runs `python -m demo --out demo-out` from the pack folder (pass --out DIR to write elsewhere;
# e.g. --methods SAG,PAG or --threads 4). It prints its progress and ends by naming the sheet.
# TORCH_INDEX: where CPU torch comes from (default PyTorch's CPU wheel index; empty: pip's own index).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0
VENV=.venv
PY="$VENV/bin/python"
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

torch_ok() {
    "$PY" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null
}

if [ ! -x "$PY" ]; then
    echo "demo/run.sh: creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if torch_ok; then
    echo "demo/run.sh: reusing $VENV (torch $TORCH_VERSION present)"
else
    echo "demo/run.sh: installing CPU torch==$TORCH_VERSION (a few hundred MB, once)"
    index=()
    [ -n "$TORCH_INDEX" ] && index=(--extra-index-url "$TORCH_INDEX")
    "$PY" -m pip install "torch==$TORCH_VERSION" ${index[@]+"${index[@]}"}
fi
echo "torch==$TORCH_VERSION" > "$VENV/constraints.txt"
echo "demo/run.sh: installing requirements.txt"
"$PY" -m pip install -q -c "$VENV/constraints.txt" -r requirements.txt
torch_ok || { echo "demo/run.sh: torch is not $TORCH_VERSION after installing requirements" >&2; exit 1; }

out=(--out demo-out)
for arg in "$@"; do
    case "$arg" in --out|--out=*) out=() ;; esac
done
echo "demo/run.sh: python -m demo ${out[*]-} $*"
exec "$PY" -m demo ${out[@]+"${out[@]}"} "$@"
