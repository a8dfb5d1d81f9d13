#!/usr/bin/env bash
# One go on a CUDA machine (under 8 minutes on one modern GPU): the unit suite with CUDA visible, a short
# `gpu`-preset training (float32 eager against bf16 + torch.compile), cached against naive sampling at
# 32 x 32, and, with two or more GPUs, two NCCL processes against one on the same global batch.
# Run from the repository root after `make setup`:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-_build/gpu_check}
mkdir -p "$OUT"
summary=()
row() { summary+=("| $1 | $2 |"); }

"$PY" - <<'PY' || { echo "error: no CUDA device visible to torch"; exit 1; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
name=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
row "device" "$gpus x $name, torch $("$PY" -c 'import torch; print(torch.__version__)')"

# 1. The unit suite with CUDA visible: every test that picks the default device runs on the GPU.
#    The learning test trains on the CPU by design (its figures are the CPU's), so it is left out here.
if "$PY" -m pytest -q -x tests --ignore=tests/browser --deselect tests/test_learning.py > "$OUT/unit.log" 2>&1; then
  row "unit suite (CUDA visible)" "$(tail -n 1 "$OUT/unit.log")"
else
  row "unit suite (CUDA visible)" "FAILED: see $OUT/unit.log"
fi

# 2. Training speed of the gpu preset.
if "$PY" benchmarks/bench_train.py --preset gpu --device cuda --steps 200 > "$OUT/train.md" 2>&1; then
  while IFS='|' read -r _ config rate rel _; do
    row "gpu preset training: ${config# }" "${rate# } steps/s (${rel# })"
  done < <(grep -E '^\| (float32|bf16)' "$OUT/train.md")
else
  row "gpu preset training" "FAILED: see $OUT/train.md"
fi

# 3. Sampling: cached against naive on a 32 x 32 grid.
if "$PY" benchmarks/bench_sampling.py --device cuda > "$OUT/sampling.md" 2>&1; then
  row "sampling (32 x 32, 7 x 7)" "table in $OUT/sampling.md"
else
  row "sampling" "FAILED: see $OUT/sampling.md"
fi

# 4. Data-parallel equivalence on NCCL: 2 processes against 1 at the same global batch, 30 steps.
if [ "$gpus" -ge 2 ]; then
  rm -rf "$OUT/one" "$OUT/two"
  "$PY" -m vqvae_lib train-vqvae --preset ci --steps 30 --out "$OUT/one" > "$OUT/ddp.log" 2>&1 &&
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m vqvae_lib train-vqvae --preset ci --steps 30 \
    --out "$OUT/two" >> "$OUT/ddp.log" 2>&1 &&
  diff=$("$PY" - "$OUT" <<'PY'
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/{r}/model.safetensors") for r in ("one", "two"))
print(f"max |weight difference| {max(float((a[k].double() - b[k].double()).abs().max()) for k in a):.2e}")
PY
) && row "NCCL, 2 GPUs vs 1 (ci, 30 steps)" "$diff" || row "NCCL, 2 GPUs vs 1" "FAILED: see $OUT/ddp.log"
else
  row "NCCL, 2 GPUs vs 1" "skipped: one GPU"
fi

printf '\n| check | result |\n| :-- | :-- |\n'
printf '%s\n' "${summary[@]}"
