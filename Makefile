# Two commands for a fresh machine:
#   make lab   - create .venv, install the package, open JupyterLab on notebooks/
#   make test  - create .venv if needed, install with test extras, run every test
# Both are idempotent: the install step re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: lab test lint nav exercises bench clean help

help:
	@echo "make lab    - install into $(VENV) and open JupyterLab on notebooks/"
	@echo "make test   - install test extras into $(VENV) and run every test"
	@echo "make lint   - ruff over the package, tests and benchmarks"
	@echo "make nav    - rewrite the navigation cells of the chapters (after adding one)"
	@echo "make exercises - regenerate exercises/ and solutions/ from source/ (nbgrader)"
	@echo "make bench  - run the benchmarks (prints figures and ratios)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-lab

# JupyterLab refuses to run as root unless told (containers, some Binder-like setups).
JUPYTER_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(VENV)/.installed-lab
	$(BIN)/jupyter lab $(JUPYTER_ARGS) notebooks/

# Chapters' checkpoints raise when a demonstration breaks (mailkit_edu.course.checkpoint).
test: $(VENV)/.installed-test
	$(BIN)/ruff check mailkit_edu tests benchmarks
	MAILKIT_STRICT_CHECKPOINTS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

nav: $(VENV)/.installed-lab
	$(BIN)/python -m mailkit_edu.course notebooks

# The graded exercises: source/ is the one source; nbgrader writes exercises/ (stubs,
# visible tests) and solutions/. tests/test_grading.py fails when they differ from it.
exercises: $(VENV)/.installed-test
	$(BIN)/python -m mailkit_edu.grading generate

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mailkit_edu tests benchmarks
	$(BIN)/ruff format --check mailkit_edu tests benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
