# The two set-up commands of the README. Each installs what it needs from this repository's own files
# into a virtual environment (.venv), then runs.
#   make demo   the main job: the CPU quickstart (see README and docs/quickstart.md)
#   make test   lint + the default test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.latbot-installed

export HF_HUB_OFFLINE := 1
export MUJOCO_GL ?= egl
# torch next to a simulator: one OpenMP thread (measured 7 s vs 97 s for the same small training run)
export OMP_NUM_THREADS ?= 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml plugins/latbot-example-plugin/pyproject.toml
	bash tools/install_system_deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sim,libero,maniskill]' -e plugins/latbot-example-plugin
	# openpi's own client, for the server tests: its metadata pins numpy<2, its code runs on numpy 2
	# (msgpack + websockets are in the dev extra), so it is installed without its dependency pins.
	$(BIN)/python -m pip install --quiet --no-deps 'openpi-client==0.1.2'
	touch $@

DEMO ?= demo

# The main job: the CPU quickstart, the whole method end to end (docs/quickstart.md). Rerunning it skips
# finished stages and resumes an interrupted one.
demo: $(STAMP)
	$(BIN)/latbot quickstart --out $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check latbot plugins tests tools

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
