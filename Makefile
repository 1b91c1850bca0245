# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create .venv idempotently; each stamp is rebuilt when pyproject.toml changes.
# `demo` installs the harness extra (gradpower[train]); `test` adds the test and framework extras and the linter, and
# after the suite checks the release: the sdist and wheel built, the wheel installed alone outside the clone and used.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := $(VENV)/.torch
TRAIN_STAMP := $(VENV)/.installed-train
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test docs clean

$(TORCH):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The machine's local CPU wheel satisfies the torch pin; elsewhere pip resolves the range.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.9,<2.15"
	touch $(TORCH)

$(TRAIN_STAMP): pyproject.toml $(TORCH)
	$(BIN)/python -m pip install -q -e ".[train]"
	touch $(TRAIN_STAMP)

$(DEV_STAMP): pyproject.toml $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEV_STAMP)

demo: $(TRAIN_STAMP)
	$(BIN)/gradpower compare

test: $(DEV_STAMP)
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n 2 --durations=10
	tools/release_check.sh $(BIN)/python

# The documentation site (docs/ -> site/): MkDocs with the Material theme, the API from the docstrings.
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
