# The two set-up commands of the README. Each installs what it needs from this repository's own files
# into a virtual environment (.venv), then runs.
#   make demo   the main job: the furthest real pipeline that exists (see README)
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
	$(BIN)/python -m pip install --quiet -e '.[dev,sim,libero]' -e plugins/latbot-example-plugin
	# openpi's own client, for the server tests: its metadata pins numpy<2, its code runs on numpy 2
	# (msgpack + websockets are in the dev extra), so it is installed without its dependency pins.
	$(BIN)/python -m pip install --quiet --no-deps 'openpi-client==0.1.2'
	touch $@

DEMO ?= demo

# Until the CPU quickstart lands, the demo runs the furthest real pipeline: sample sources written in
# each real format -> episode stores -> verified -> inspected; MetaWorld expert demonstrations -> a store,
# the closed-loop harness on the experts, and a short tiny-LAM pretraining run on that store.
demo: $(STAMP)
	$(BIN)/latbot --version
	$(BIN)/latbot plugins list
	$(BIN)/latbot plugins check
	$(BIN)/python -m latbot.data.samples $(DEMO)/sources
	$(BIN)/latbot data convert $(DEMO)/sources/lerobot_v30 --format lerobot --out $(DEMO)/stores/lerobot_v30 --image-size 64
	$(BIN)/latbot data convert $(DEMO)/sources/lerobot_v21 --format lerobot --out $(DEMO)/stores/lerobot_v21 --image-size 64
	$(BIN)/latbot data convert $(DEMO)/sources/libero --format libero_hdf5 --out $(DEMO)/stores/libero --image-size 64
	$(BIN)/latbot data convert $(DEMO)/sources/egodex --format egodex --out $(DEMO)/stores/egodex --image-size 64
	for s in lerobot_v30 lerobot_v21 libero egodex; do $(BIN)/latbot data verify $(DEMO)/stores/$$s || exit 1; done
	$(BIN)/latbot data info $(DEMO)/stores/egodex
	$(BIN)/latbot data gen-sim --sim metaworld --tasks reach,drawer-open --episodes 3 --image-size 64 --out $(DEMO)/stores/metaworld
	$(BIN)/latbot data verify $(DEMO)/stores/metaworld
	$(BIN)/latbot eval sim --sim metaworld --policy scripted --tasks reach,drawer-open --episodes 3
	rm -rf $(DEMO)/runs/lam
	$(BIN)/latbot train recipes/tiny/lam.yaml --set data.sources='[{store: $(DEMO)/stores/metaworld}]' \
	    --set train.steps=40 --set train.checkpoint_every=20 --set log.out_dir=$(DEMO)/runs --set log.run_name=lam
	$(BIN)/latbot viz episode $(DEMO)/stores/metaworld --episode 0-1 --checkpoint $(DEMO)/runs/lam --out $(DEMO)/episodes.rrd
	$(BIN)/latbot grounding-analysis --checkpoint $(DEMO)/runs/lam --data $(DEMO)/stores/metaworld --samples 4 --out $(DEMO)/grounding

lint: $(STAMP)
	$(BIN)/ruff check latbot plugins tests tools

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
