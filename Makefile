# gpu-autoscaler — every target sets up its own virtual environment when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test test-fast bench lint fmt typecheck crd proto gpu-check clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# torch for the GPU-replay tests (CPU build, pinned: an unpinned torch pulls a CUDA build)
	$(PY) -m pip install --quiet 'torch==2.13.0' || echo "torch==2.13.0 unavailable: GPU replay tests will be skipped"
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with its dev extras

run: $(STAMP) ## Run the controller on the embedded default (simulated cluster, HTTP :8080, gRPC :9090)
	$(VENV)/bin/gpu-autoscaler run $(ARGS)

test: $(STAMP) ## Run the test suite (needs the prometheus binary for the Prometheus tests)
	$(VENV)/bin/pytest -q $(ARGS)

bench: $(STAMP) ## Run the benchmarks in tests/bench and print their figures
	GPU_AUTOSCALER_BENCH=full $(VENV)/bin/pytest -q -s -p no:randomly tests/bench $(ARGS)

lint: $(STAMP) ## ruff, mypy (strict on policies/) and the import-layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy policies autoscaler simulator
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

crd: $(STAMP) ## Regenerate the CRD from the pydantic model
	$(VENV)/bin/gpu-autoscaler crd > manifests/base/crd.yaml

proto: $(STAMP) ## Regenerate the KEDA gRPC stubs
	$(PY) -m autoscaler.keda.regen

gpu-check: ## On a machine with an NVIDIA GPU: profile the reference server and replay the traces (<= 8 min)
	bash scripts/gpu_check.sh

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
