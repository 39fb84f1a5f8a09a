# The README's two set-up commands: `make demo` and `make test`.
# Both create .venv when it is missing and (re)install the project when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-out

# Offline by construction: no hub downloads, no telemetry.
export HF_HUB_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint typecheck pytest stac-server taco-reader bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# SEN2NAIP (cross-sensor + synthetic + pruning), then SEN2VENuS and the Sentinel-HR series on
# the same demo world.
demo: $(STAMP)
	$(BIN)/harvest build configs/builds/demo.yaml --set output=$(DEMO_DIR)
	$(BIN)/harvest build configs/builds/demo-sen2venus.yaml --set output=$(DEMO_DIR)-sen2venus \
		--set catalog.world=$(DEMO_DIR)/.harvest/demo-world
	$(BIN)/harvest build configs/builds/demo-sentinel-hr.yaml --set output=$(DEMO_DIR)-sentinel-hr \
		--set catalog.world=$(DEMO_DIR)/.harvest/demo-world

lint: $(STAMP)
	$(BIN)/ruff check harvest degradation tests bench notebooks
	$(BIN)/ruff format --check harvest degradation tests bench notebooks

typecheck: $(STAMP)
	$(BIN)/mypy harvest degradation

# The integration tests run a real STAC API (stac-fastapi-pgstac on PostgreSQL + PostGIS).
stac-server:
	bash tests/integration/setup_stac_server.sh

# The export tests read TACO files back with tacoreader, in its own venv (it needs duckdb<2).
taco-reader:
	bash tests/integration/setup_taco_reader.sh

pytest: $(STAMP) stac-server taco-reader
	$(BIN)/pytest -q

test: lint typecheck pytest

# The peers the benchmarks compare with come with the test extra.
bench: $(STAMP)
	$(BIN)/python bench/bench_sample.py
	$(BIN)/python bench/bench_degradation.py
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_fetch.py
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_cluster.py
	$(BIN)/python bench/bench_build.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
