# The two ways in: `make run` serves the app, `make test` runs the test suite.
# Both create the virtual environment and install requirements.txt first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

.PHONY: run test test-fast install lint clean-venv

run: $(STAMP)
	$(BIN)/streamlit run app.py

test: $(STAMP)
	$(BIN)/python -m pytest

# Skips the slow tests that train on real MovieLens-100K or start processes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

install: $(STAMP)

# Reinstalls whenever requirements.txt changes.
$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet ruff==0.17.6
	$(BIN)/ruff check lrml pages tests app.py

clean-venv:
	rm -rf $(VENV)
