# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create .venv idempotently; the stamp is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The machine's local CPU wheel satisfies the torch pin; elsewhere pip resolves the range.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.9,<2.15"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gradpower demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=10

clean:
	rm -rf $(VENV) runs
