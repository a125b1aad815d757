#!/usr/bin/env bash
# The GPU check in one command (issue #18; benchmarks/README.md, "GPU check").
#
#   bash benchmarks/gpu_check.sh [--dry-run] [gpu_check.py options]
#
# On the GPU machine (Python 3.12, torch with CUDA; no diffusers, no network): installs the wheels
# carried in .gpu_wheels/ (made here by benchmarks/gpu_wheels.sh) into /tmp/easyphoto-gpu-site, puts
# that and src/ on PYTHONPATH (no install of our package: no build backend needed there), then runs
# benchmarks/gpu_check.py, which prints PASS/FAIL/SKIP per path and writes gpu_check.txt under $OUT
# (else ./gpu_check_out). --dry-run: the same on this CPU with the tiny model, nothing installed.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then dry=1; fi
done
out="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$out"

py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ "$dry" = 1 ] && [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi

site=""
if [ "$dry" = 0 ]; then
  if compgen -G ".gpu_wheels/*.whl" >/dev/null; then
    site=/tmp/easyphoto-gpu-site
    echo "installing $(ls .gpu_wheels/*.whl | wc -l) carried wheels into $site: $(cd .gpu_wheels && ls *.whl | tr '\n' ' ')"
    if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .gpu_wheels/*.whl; then
      echo "WARNING: installing the carried wheels failed; going on with what is installed"
    fi
  else
    echo "WARNING: no .gpu_wheels/*.whl: run benchmarks/gpu_wheels.sh here and carry .gpu_wheels"
  fi
fi

# Settings of the environment must not change what is checked (EASYPHOTO_HOME is set by the check).
for var in $(compgen -e | grep '^EASYPHOTO_' || true); do unset "$var"; done
export PYTHONPATH="$PWD/src${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
if [ "$dry" = 1 ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
exec "$py" benchmarks/gpu_check.py --out "$out" "$@"
