#!/usr/bin/env bash
# Prepare .gpu_wheels/ here: the Python packages the GPU machine lacks, as wheels for its Python 3.12 on
# manylinux x86-64 (it has no network). benchmarks/gpu_check.sh installs them there; carry the folder
# with the device tool's `carry: [".gpu_wheels"]` (benchmarks/README.md, "GPU check").
#
#   bash benchmarks/gpu_wheels.sh [--no-bnb] [--no-litert]
#
# What the GPU image lacks (python3.12, torch 2.11+cu130, transformers 5.17, accelerate 1.15, peft,
# huggingface_hub 1.33, tokenizers 0.23, opencv, scikit-image; see the device KINDS.md package list):
#   * diffusers (pinned in pyproject.toml) and its importlib_metadata;
#   * pydantic + pydantic-core + pydantic-settings (+ python-dotenv, annotated-types, typing-inspection,
#     typing_extensions), which easyphoto.config needs: not in the image;
#   * our pinned transformers and peft: the image's transformers 5.17 also runs the dry run (checked with
#     transformers 5.17.0 + huggingface_hub 1.33.0 on this CPU), but ~13 MB buys running what users
#     install, and the image's peft version is unknown;
#   * bitsandbytes for the 8-bit AdamW path, slimmed to its CPU and CUDA 13.x libraries (43 MB → ~5 MB;
#     the image's torch is built for CUDA 13.0). --no-bnb leaves it out;
#   * ai-edge-litert (+ backports.strenum; the image has its flatbuffers, ml-dtypes, protobuf), the runtime
#     of the person segmenter, for the `finishing` path's background replacement (~22 MB). --no-litert
#     leaves it out (that part of the path then says SKIPPED).
# Versions: the pins of pyproject.toml, and for the rest what this repo's .venv has (tested together).
# The script checks that the tree that travels (tracked and untracked files + these wheels) stays under
# 64 MiB, dropping ai-edge-litert first, then bitsandbytes, if it would not.
set -euo pipefail
cd "$(dirname "$0")/.."

bnb=1
litert=1
for arg in "$@"; do
  case "$arg" in
    --no-bnb) bnb=0 ;;
    --no-litert) litert=0 ;;
    *) echo "usage: $0 [--no-bnb] [--no-litert]" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
dest=.gpu_wheels
bnb_version=0.50.2
limit=$((64 * 1024 * 1024))

pin() { sed -nE "s/^[[:space:]]*\"$1==([^\"]+)\".*/\1/p" pyproject.toml | head -1; }
have() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=(
  "diffusers==$(pin diffusers)" "transformers==$(pin transformers)" "peft==$(pin peft)"
  "importlib_metadata==$(have importlib_metadata)"
  "pydantic==$(have pydantic)" "pydantic_core==$(have pydantic_core)"
  "pydantic-settings==$(have pydantic-settings)" "python-dotenv==$(have python-dotenv)"
  "annotated-types==$(have annotated-types)" "typing-inspection==$(have typing-inspection)"
  "typing_extensions==$(have typing_extensions)"
)
if [ "$litert" = 1 ]; then
  wheels+=("ai-edge-litert==$(have ai-edge-litert)" "backports.strenum==$(have backports.strenum)")
fi
download=(
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
)

rm -rf "$dest"
mkdir -p "$dest"
echo "downloading: ${wheels[*]}"
"${download[@]}" -d "$dest" "${wheels[@]}"

if [ "$bnb" = 1 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "downloading: bitsandbytes==$bnb_version (slimmed to its CPU and CUDA 13.x libraries)"
  "${download[@]}" -d "$tmp" "bitsandbytes==$bnb_version"
  for whl in "$tmp"/bitsandbytes-*.whl; do
    "$py" - "$whl" "$dest/$(basename "$whl")" <<'EOF'
import re
import sys
import zipfile

src, dst = sys.argv[1:3]
keep = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    drop = {i.filename for i in zin.infolist() if i.filename.endswith(".so") and not keep.search(i.filename)}
    for info in zin.infolist():
        if info.filename in drop:
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):  # list only what the wheel still holds
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if line.split(",")[0] not in drop).encode()
        zout.writestr(info, data)
print(f"  dropped {len(drop)} libraries: {', '.join(sorted(d.rsplit('/', 1)[-1] for d in drop))}")
EOF
  done
fi

tree_bytes() {  # what travels besides the wheels: tracked + untracked-not-ignored files
  git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
wheel_bytes() { du -cb "$dest"/*.whl | tail -1 | cut -f1; }
tree=$(tree_bytes)
if [ $((tree + $(wheel_bytes))) -ge "$limit" ] && compgen -G "$dest/ai_edge_litert-*.whl" >/dev/null; then
  echo "over 64 MiB with ai-edge-litert: leaving it out (background replacement in 'finishing' will SKIP)"
  rm -f "$dest"/ai_edge_litert-*.whl "$dest"/backports_strenum-*.whl
fi
if [ $((tree + $(wheel_bytes))) -ge "$limit" ] && compgen -G "$dest/bitsandbytes-*.whl" >/dev/null; then
  echo "over 64 MiB with bitsandbytes: leaving it out (the 8-bit AdamW path will SKIP)"
  rm -f "$dest"/bitsandbytes-*.whl
fi
total=$((tree + $(wheel_bytes)))
ls -l "$dest" | awk 'NR > 1 {printf "  %8.2f MB  %s\n", $5 / 1e6, $9}'
printf '.gpu_wheels: %.1f MB; with the working tree (%.1f MB) %.1f MiB of the 64 MiB that may travel\n' \
  "$(echo "$(wheel_bytes) / 1000000" | bc -l)" "$(echo "$tree / 1000000" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -ge "$limit" ]; then
  echo "ERROR: over 64 MiB: the device tool will refuse the call" >&2
  exit 1
fi
