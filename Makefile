# distdd-nas — every target sets up what it needs (idempotent; fast once installed).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= dev,nni,flower,postgres
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

.PHONY: setup data demo-data test lint typecheck docs pytest demo bench groundtruth evidence \
	groundtruth-fedavg evidence-fedavg clean

setup: $(STAMP) data

# The full set-up (tests, Flower, NNI, PostgreSQL driver) ...
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

# ... and the demo's: the package and its required dependencies only.
BASE_STAMP := $(VENV)/.installed-base
$(BASE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $(BASE_STAMP)

# apt packages where apt exists and we are root: $(1) = what is missing, $(2) = packages.
define apt_install
	@if $(1); then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      $(2) >/dev/null) || echo "warning: apt-get install $(2) failed; what needs it will skip"; \
	  else echo "note: no apt-get as root; install $(2) yourself"; fi; \
	fi
endef

# Fashion-MNIST (Debian's dataset-fashion-mnist) and PostgreSQL (server tests only).
data:
	$(call apt_install,[ ! -f $(FMNIST) ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1,dataset-fashion-mnist postgresql)

demo-data:
	$(call apt_install,[ ! -f $(FMNIST) ],dataset-fashion-mnist)

lint: $(STAMP)
	$(VENV)/bin/ruff check distdd_nas tests bench
	$(VENV)/bin/ruff format --check distdd_nas tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy distdd_nas

# API documentation from the docstrings (pdoc): the package page and its public modules; the
# other modules re-export lazily through __all__, which pdoc cannot follow. Fails on a pdoc
# warning (dependencies' DeprecationWarnings ignored, as in pytest).
DOC_MODULES := api|config|errors|resources
docs: $(STAMP)
	rm -rf build/docs
	$(PY) -W error -W ignore::DeprecationWarning -m pdoc --docformat google -o build/docs \
	  distdd_nas '!distdd_nas\.(?!($(DOC_MODULES))$$)'

pytest: setup
	$(PY) -m pytest

test: setup lint typecheck docs pytest

# The demo owns the machine, so it uses both of a 2-core machine's cores (the CLI's default is 1
# thread: safe beside other jobs). The thread count is part of the distilled set's cache key.
DEMO_THREADS ?= 2
demo: $(BASE_STAMP) demo-data
	$(VENV)/bin/distdd-nas --threads $(DEMO_THREADS) run studies/quickstart.toml

bench: setup
	$(PY) bench/fedavg_round.py
	$(PY) bench/distill_step.py

# The quickstart ground truth (resumable: re-run to continue; N processes share it with --shard).
groundtruth: setup
	$(VENV)/bin/distdd-nas --threads 1 groundtruth studies/quickstart.toml \
	  --set groundtruth.rounds=16 --out bench/data/quickstart

# Every cheap proxy against the ground truth (the DistDD proxy at the study's 30 epochs and at
# 100), then the search cost at equal quality, replayed for the study's own proxy. The committed
# proxies.md and search_cost.md were made by this target (README, "Evidence").
evidence: setup
	$(PY) bench/proxies.py --study studies/quickstart.toml --table bench/data/quickstart \
	  --cache artifacts --threads 1 --epochs-long 100
	$(PY) bench/search_cost.py --study studies/quickstart.toml --table bench/data/quickstart \
	  --cache artifacts --proxy distdd_e30

# The FL-hyper-parameter ground truth: the quickstart's reference ConvNet under the 30-point
# fedavg_grid (client lr × local epochs × batch), 2 seeds, 16 rounds; then its predictors.
FEDAVG_GRID = --set 'search.space="fedavg_grid"'
groundtruth-fedavg: setup
	$(VENV)/bin/distdd-nas --threads 1 groundtruth studies/quickstart.toml $(FEDAVG_GRID) \
	  --set groundtruth.candidates=30 --set groundtruth.rounds=16 --out bench/data/fedavg_grid

# Read twice: truth = seed 1 (kept as proxies_truth_seed1.md), then the default, truth = seed 0.
evidence-fedavg: setup
	$(PY) bench/proxies.py --study studies/quickstart.toml $(FEDAVG_GRID) \
	  --table bench/data/fedavg_grid --cache artifacts --threads 1 --replicates 1,0
	mv bench/data/fedavg_grid/proxies.md bench/data/fedavg_grid/proxies_truth_seed1.md
	$(PY) bench/proxies.py --study studies/quickstart.toml $(FEDAVG_GRID) \
	  --table bench/data/fedavg_grid --cache artifacts --threads 1
	$(PY) bench/search_cost.py --study studies/quickstart.toml $(FEDAVG_GRID) \
	  --table bench/data/fedavg_grid --cache artifacts --proxy sim_real_steps --size 30

clean:
	rm -rf runs artifacts .pytest_cache .mypy_cache .ruff_cache
