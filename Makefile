# rt_panoptic_ros developer commands. `make setup` builds .venv with everything (a no-op when
# it is up to date); `make test` runs the whole test suite in it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-complete
# torch/torchvision are installed on their own first: these exact versions lie on this
# machine's disk (a CUDA build that also runs on the CPU); other versions download gigabytes.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/forward_cpu.py

clean:
	rm -rf $(VENV) build install log .pytest_cache
