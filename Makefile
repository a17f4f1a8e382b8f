# The two ways in: `make run` serves the app, `make test` runs the test suite.
# Both create the virtual environment and install requirements.txt first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

.PHONY: run test test-fast test-e2e screenshots bench bench-load bench-webgl install lint clean-venv

run: $(STAMP)
	$(BIN)/streamlit run app.py

# -rs lists each skipped test with its reason, such as the browser tests on a
# machine without Chromium.
test: $(STAMP)
	$(BIN)/python -m pytest -rs

# Skips the slow tests that train on real MovieLens-100K or start processes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The browser tests alone: Playwright drives /usr/bin/chromium against the app.
test-e2e: $(STAMP)
	$(BIN)/python -m pytest -rs tests/e2e

# Refreshes the README's images in docs/screenshots from the browser tests. CI=1
# makes a missing browser an error here, not a skip.
screenshots: $(STAMP)
	CI=1 LRML_SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest -rs tests/e2e \
		-k "test_page_opens_without_error or test_presentation_mode_from_url"

# Trains LRML and the baselines on MovieLens-100K, times epochs and the 20M-row
# scale case, and rewrites bench/RESULTS.md (about 12 minutes on two cores).
bench: $(STAMP)
	$(BIN)/python bench/bench_models.py

# Ten browser sessions browse every page while a run trains; prints page-load times.
bench-load: $(STAMP)
	$(BIN)/python bench/bench_load.py

# Times zoom, pan and hover redraws of the Embeddings map in Chromium.
bench-webgl: $(STAMP)
	$(BIN)/python bench/bench_webgl.py

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
