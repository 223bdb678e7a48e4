# Two entry points for a fresh machine: `make demo` (main job on the shipped examples)
# and `make test` (lint, type-check, tests). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-server demo-cohort test setup lint clean

$(BIN)/trialsieve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/trialsieve

demo: setup
	$(BIN)/trialsieve evaluate criteria/NCT05315778.yaml --bundle examples/patients --bundle examples/synthea \
		--as-of 2026-11-01 --attestations examples/attestations.yaml --output out/examples
	$(BIN)/trialsieve evaluate criteria/NCT03036150.yaml --bundle examples/ckd \
		--as-of 2026-11-01 --attestations examples/attestations-nct03036150.yaml --output out/examples-nct03036150

demo-server: setup
	$(BIN)/trialsieve demo criteria/NCT05315778.yaml --as-of 2026-11-01 --attestations examples/attestations.yaml

demo-cohort: setup
	rm -rf out/cohort-examples
	$(BIN)/trialsieve cohort criteria/NCT05315778.yaml --bundles examples --as-of 2026-11-01 \
		--attestations examples/attestations.yaml --out out/cohort-examples

# Quiet unless something is wrong: each tool prints only problems (and pytest its progress).
lint: setup
	@$(BIN)/ruff check --quiet engine tests benchmarks
	@$(BIN)/ruff format --check --quiet engine tests benchmarks
	@$(BIN)/mypy --no-error-summary
	@out=$$($(BIN)/lint-imports --no-cache 2>&1) || { printf '%s\n' "$$out"; exit 1; }
	$(BIN)/trialsieve lint criteria mappings
	@$(BIN)/trialsieve test criteria

# One test process per core (pytest-xdist); a long test goes to whichever process is free.
test: lint
	@$(BIN)/pytest -n auto --dist worksteal

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
