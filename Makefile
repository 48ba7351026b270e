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

.PHONY: setup data test lint typecheck pytest demo bench groundtruth evidence clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Fashion-MNIST (Debian's dataset-fashion-mnist) and PostgreSQL (server tests), where apt exists.
data:
	@if [ ! -f $(FMNIST) ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      dataset-fashion-mnist postgresql >/dev/null) || echo "warning: apt-get failed; tests needing Fashion-MNIST/PostgreSQL will skip"; \
	  else echo "note: no apt-get as root; install dataset-fashion-mnist and postgresql yourself"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check distdd_nas tests bench
	$(VENV)/bin/ruff format --check distdd_nas tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy distdd_nas

pytest: setup
	$(PY) -m pytest

test: setup lint typecheck pytest

demo: setup
	$(VENV)/bin/distdd-nas run studies/quickstart.toml

bench: setup
	$(PY) bench/fedavg_round.py
	$(PY) bench/distill_step.py

# The quickstart ground truth (resumable: re-run to continue; N processes share it with --shard).
groundtruth: setup
	$(VENV)/bin/distdd-nas --threads 1 groundtruth studies/quickstart.toml \
	  --set groundtruth.rounds=16 --out bench/data/quickstart

# Every cheap proxy against the ground truth, then the search cost at equal quality.
evidence: setup
	$(PY) bench/proxies.py --study studies/quickstart.toml --table bench/data/quickstart \
	  --cache artifacts --threads 1
	$(PY) bench/search_cost.py --study studies/quickstart.toml --table bench/data/quickstart \
	  --cache artifacts --proxy distdd_e100

clean:
	rm -rf runs artifacts .pytest_cache .mypy_cache .ruff_cache
