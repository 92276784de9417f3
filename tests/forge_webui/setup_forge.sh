#!/usr/bin/env bash
# Prepare a real Forge WebUI (lllyasviel/stable-diffusion-webui-forge; or reForge with FLAVOR=reforge) on the
# CPU, headless, with the AttnGuide pack as an extension and a tiny random-weight SD1 checkpoint, for
# tests/forge_webui. Nothing it creates belongs in this repository: it all goes under $HOSTS (outside it).
# Idempotent: re-running refreshes the extension copy and redoes only the steps whose output is missing.
#
#   MIRROR=/work/.mirror PACK=$PWD CPU_SHIM=/work/shared/tools/cpu-shim HOSTS=/work/hosts/forge \
#     bash tests/forge_webui/setup_forge.sh
#   FORGE_WEBUI_PATH=/work/hosts/forge/webui /work/hosts/forge/venv/bin/python -m pytest tests/forge_webui
#
#   $HOSTS/webui                       Forge at $FORGE_COMMIT (default: main of 2025-06-26, dfdcbab6), file by file
#   $HOSTS/webui/repositories/huggingface_guess   at the commit Forge's launch_utils.py pins (84826248)
#   $HOSTS/webui/extensions/attnguide  a copy of $PACK (never written to)
#   $HOSTS/shim                        a copy of $CPU_SHIM (the tests put it on PYTHONPATH)
#   $HOSTS/venv                        python venv: CPU torch 2.13.0 + torchvision 0.28 + Forge's requirements
#                                      (torch unpinned); run it with PYTHONPATH=$CPU_SHIM
#   $HOSTS/webui/models/Stable-diffusion/tiny.safetensors   see make_tiny_forge_model.py
#
# Snapshots needed in $MIRROR/<owner>+<name>/repo: lllyasviel/stable-diffusion-webui-forge and
# lllyasviel/huggingface_guess; for FLAVOR=reforge Panchovix/stable-diffusion-webui-reForge,
# Stability-AI/stablediffusion, Stability-AI/generative-models and crowsonkb/k-diffusion (and FORGE_TINY,
# the checkpoint of a Forge set-up).
# Start the server (tests/forge_webui/conftest.py does this on a free port):
#   cd $HOSTS/webui && PYTHONPATH=$CPU_SHIM $HOSTS/venv/bin/python launch.py --skip-prepare-environment \
#     --skip-install --skip-torch-cuda-test --skip-version-check --skip-python-version-check --always-cpu \
#     --api --nowebui --server-name 127.0.0.1 --port 7862 --no-hashing --no-download-sd-model
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLAVOR=${FLAVOR:-forge}
H=${HOSTS:-/tmp/$FLAVOR}
MIRROR=${MIRROR:?set MIRROR to the folder that holds the repository snapshots as <owner>+<name>/repo}
PACK=${PACK:?set PACK to the pack checkout (it is copied, never written)}
SHIM=${CPU_SHIM:?set CPU_SHIM to the cpu-shim folder (sitecustomize.py for CPU torch + PyPI torchvision)}
PY=${PYTHON311:-$(command -v python3.11 || command -v python3)}
case "$FLAVOR" in
  forge) SNAP=lllyasviel+stable-diffusion-webui-forge; COMMIT=${FORGE_COMMIT:-dfdcbab685e57677014f05a3309b48cc87383167};;
  reforge) SNAP=Panchovix+stable-diffusion-webui-reForge; COMMIT=${FORGE_COMMIT:-3b56b268ad9158ee8b30900973b6ccda4ec22241};;
  *) echo "setup: FLAVOR is forge or reforge" >&2; exit 2;;
esac
mkdir -p "$H"

extract() {  # extract <owner+name> <commit> <dest>: file by file (a snapshot may lack its largest blobs)
  local git_dir="$MIRROR/$1/repo"
  [ -d "$git_dir" ] || { echo "setup: no snapshot $git_dir: bring github:${1/+//} there first" >&2; exit 2; }
  if [ ! -f "$3/.snapshot" ]; then
    rm -rf "$3"; mkdir -p "$3"
    git --git-dir="$git_dir" ls-tree -r "$2" | while read -r mode type sha path; do
      [ "$type" = blob ] || continue
      mkdir -p "$3/$(dirname "$path")"
      git --git-dir="$git_dir" cat-file blob "$sha" > "$3/$path" 2>/dev/null || rm -f "$3/$path"
      case "$mode" in 100755) chmod +x "$3/$path" 2>/dev/null || true;; esac
    done
    git --git-dir="$git_dir" log -1 --format='%H %cs %s' "$2" > "$3/.snapshot"
  fi
}

W="$H/webui"
extract "$SNAP" "$COMMIT" "$W"
pinned() { sed -n "s/.*$1', \"\([0-9a-f]*\)\".*/\1/p" "$W/modules/launch_utils.py"; }
if [ "$FLAVOR" = forge ]; then
  extract lllyasviel+huggingface_guess "$(pinned HUGGINGFACE_GUESS_HASH)" "$W/repositories/huggingface_guess"
else  # reForge's repositories; its Stable Diffusion fork's commit is not in Stability-AI's history: A1111's commit
  extract Stability-AI+stablediffusion cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf "$W/repositories/stable-diffusion-stability-ai"
  extract Stability-AI+generative-models "$(pinned STABLE_DIFFUSION_XL_COMMIT_HASH)" "$W/repositories/generative-models"
  extract crowsonkb+k-diffusion "$(pinned K_DIFFUSION_COMMIT_HASH)" "$W/repositories/k-diffusion"
fi
mkdir -p "$W/repositories/stable-diffusion-webui-assets"

# the CPU shim beside the webui folder, where tests/forge_webui/conftest.py looks for it
mkdir -p "$H/shim"
cp -r "$SHIM/." "$H/shim/"

# venv: CPU torch 2.13.0 (newer than Forge's pin) + the host's requirements with torch held
if [ ! -f "$H/venv/.ready" ]; then
  [ -x "$H/venv/bin/python" ] || "$PY" -m venv "$H/venv"
  VP="$H/venv/bin/python"
  export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VP" -m pip install -q "torch==2.13.0" "torchvision==0.28.0" "setuptools>=77.0.3,<81"
  printf 'torch==2.13.0\ntorchvision==0.28.0\nsetuptools>=77.0.3,<81\n' > "$H/constraints.txt"
  # reForge pins a pydantic 1.10.15 wheel from GitHub: PyPI's 1.10.15 instead
  grep -v -E '^(torch\s*$|torchvision|setuptools==|xformers|https://)' "$W/requirements_versions.txt" > "$H/requirements_host.txt"
  grep -q 'pydantic-fixreforge' "$W/requirements_versions.txt" && echo 'pydantic==1.10.15' >> "$H/requirements_host.txt"
  # clip-anytorch: PyPI's copy of openai/CLIP, which launch_utils.py installs from a GitHub zip;
  # joblib: the built-in soft-inpainting script imports it; pytest: runs tests/forge_webui
  "$VP" -m pip install -q -c "$H/constraints.txt" -r "$H/requirements_host.txt" requests clip-anytorch==2.6.0 joblib pytest
  PYTHONPATH="$SHIM" "$VP" -c "import torch, torchvision, transformers, gradio, diffusers; print('venv: torch', torch.__version__, 'transformers', transformers.__version__, 'gradio', gradio.__version__)"
  touch "$H/venv/.ready"
fi

# the extension: a fresh copy of the pack every run, without .git
mkdir -p "$W/extensions/attnguide"
if command -v rsync >/dev/null; then
  rsync -a --delete --delete-excluded --exclude .git --exclude .venv --exclude __pycache__ --exclude .pytest_cache "$PACK/" "$W/extensions/attnguide/"
else
  rm -rf "$W/extensions/attnguide"; mkdir -p "$W/extensions/attnguide"
  (cd "$PACK" && tar -c --exclude .git --exclude .venv --exclude __pycache__ --exclude .pytest_cache .) | tar -x -C "$W/extensions/attnguide"
fi
git -C "$PACK" log -1 --format='%H %s' > "$W/extensions/attnguide.commit" 2>/dev/null || true

# the tiny checkpoint, built with the host's own model classes
CKPT="$W/models/Stable-diffusion/tiny.safetensors"
if [ "$FLAVOR" = reforge ]; then  # the checkpoint a Forge set-up made (same ldm key layout; reForge detects SD1.5 alike)
  cp "${FORGE_TINY:?set FORGE_TINY to the tiny.safetensors a Forge set-up made}" "$CKPT"
elif [ ! -f "$CKPT" ] || [ "$HERE/../support/make_tiny_forge_model.py" -nt "$CKPT" ]; then
  (cd "$W" && PYTHONPATH="$SHIM" "$H/venv/bin/python" "$HERE/../support/make_tiny_forge_model.py" --webui "$W" --flavor "$FLAVOR" --out "$CKPT")
fi
echo "setup: ready in $H ($FLAVOR $(cut -c1-12 "$W/.snapshot"), pack $(cut -c1-12 "$W/extensions/attnguide.commit" 2>/dev/null))"
