# `make run` and `make test` work from a clean clone: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := models privacy attacks compress pipelines

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pipeline run train-ladp prune quantize evaluate --run-dir runs/default

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests benchmarks
	$(BIN)/ruff format --check $(PACKAGES) tests benchmarks
	$(BIN)/mypy $(PACKAGES)
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# make bench: every section of BENCHMARKS.md (hours); make bench SECTION=ladp: one (names:
# benchmarks/bench_<name>.py).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(SECTION)

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
