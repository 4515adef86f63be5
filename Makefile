# The two set-up commands of the README: `make demo` runs Veil, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= veil-data
# `make demo PORT=8001 HOST=0.0.0.0` serves on another address (default 127.0.0.1:8000). Only
# values given to make count: a HOST or PORT that the shell or a platform exports is ignored.
given = $(if $(filter environment%,$(origin $(1))),,$($(1)))
SERVE_ADDRESS = $(if $(call given,PORT),--port $(call given,PORT)) \
	$(if $(call given,HOST),--host $(call given,HOST))

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/veil serve --demo --data-dir $(DATA_DIR) $(strip $(SERVE_ADDRESS))

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/test_architecture.py

bench: $(BIN)/.installed
	$(BIN)/python bench/gate_vs_raw.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
