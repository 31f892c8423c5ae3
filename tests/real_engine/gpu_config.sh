#!/usr/bin/env bash
# Validate the `vllm` backend's configuration for every GPU profile against the real
# ray.serve.llm.LLMConfig and the vLLM that ray[llm] pins, without a GPU:
#     bash tests/real_engine/gpu_config.sh
# Sets up .venv-gpu idempotently (torch 2.13.0+cpu first, then ray[llm]==2.60.0: ~7 GB),
# then runs tests/unit/llm/test_vllm_config.py there (its ray_llm tests skip in .venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${MEMSERVE_GPU_VENV:-$ROOT/.venv-gpu}"
PYTHON_BIN="${PYTHON:-python3.11}"
# Changing this string rebuilds the venv.
RECIPE="torch==2.13.0 ray[llm]==2.60.0 pytest pytest-asyncio r1"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

T=$(now)
if [[ ! -f "$VENV/.memserve-recipe" || "$(cat "$VENV/.memserve-recipe")" != "$RECIPE" ]]; then
  rm -rf "$VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  # The CPU torch wheel first: ray[llm]'s vLLM accepts it and then pulls no CUDA torch.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" "ray[llm]==2.60.0" torch==2.13.0 "pytest>=8" "pytest-asyncio>=0.24"
  # vLLM pulls CUDA-era torchvision/torchaudio/torchcodec that break `import transformers`.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec
  echo "$RECIPE" >"$VENV/.memserve-recipe"
fi
T_SETUP=$(since "$T")

T=$(now)
set +e
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
  tests/unit/llm/test_vllm_config.py "$@"
RC=$?
set -e
echo "gpu-config timings: venv ${T_SETUP}s, tests $(since "$T")s"
exit $RC
