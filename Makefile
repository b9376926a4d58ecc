# The two set-up commands of the README. Each installs what it needs from this repository's own files
# into a virtual environment (.venv), then runs.
#   make demo   the main job: the furthest real pipeline that exists (see README)
#   make test   lint + the default test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.latbot-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml plugins/latbot-example-plugin/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e plugins/latbot-example-plugin
	touch $@

demo: $(STAMP)
	$(BIN)/latbot --version
	$(BIN)/latbot plugins list
	$(BIN)/latbot plugins check
	$(BIN)/latbot recipe validate recipes/examples/lam_example_plugin.yaml
	$(BIN)/latbot recipe show recipes/examples/lam_example_plugin.yaml

lint: $(STAMP)
	$(BIN)/ruff check latbot plugins tests tools

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
