# Quick start: `make demo` runs the main job, `make test` runs the whole suite. Each target creates the
# local virtual environment on first use and installs only what it needs: the demo the core and the
# `cli` extra, the tests the `test` extra (torch and triton included).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
LINT_STAMP := $(VENV)/.installed-lint
DOCS_STAMP := $(VENV)/.installed-docs
# The minimum-versions environment: every declared floor pinned (see .ci/minimum_versions.py).
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
# pip as a user's machine has it: the public index only, none of this machine's configuration.
PUBLIC_PIP := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null

.PHONY: demo test test-slow test-min fuzz lint format docs check-resolve sdist-check bench venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[cli]"
	touch $@

# The test extra holds the cli extra's packages too, so it satisfies the demo as well.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(DEMO_STAMP)

$(LINT_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[lint]"
	touch $@

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

venv: $(TEST_STAMP)

# The documentation site, into site/; -W turns every warning (a broken link or reference, a docstring
# numpydoc cannot parse, an included file that is not there) into an error. The reference pages import
# softmaxkit.torch, so the test environment (torch) comes first. The pages' examples run in `make test`.
docs: $(TEST_STAMP) $(DOCS_STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs site

demo: $(DEMO_STAMP)
	$(BIN)/softmaxkit train

# The whole suite, doctests included; the heavy full-size sweeps (marked slow) have small
# always-run forms here and run in full with `make test-slow`.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"

test-slow: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -m slow

# The property-based tests with the large budget: hypothesis profile "fuzz" (tests/conftest.py), 30 times
# the suite's examples: over 10,000 generated inputs checked against the oracles, over 1,000 corrupted or
# hostile model files, 30 or more killed saves, predictions and training runs each.
FUZZ_TESTS := tests/test_fuzz_numpy.py tests/test_fuzz_torch.py tests/test_fuzz_estimator.py tests/test_fuzz_cli.py \
	tests/test_model_files_hostile.py tests/test_kill.py

fuzz: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 --hypothesis-profile fuzz --hypothesis-show-statistics -p no:cacheprovider $(FUZZ_TESTS)

$(MIN_STAMP): pyproject.toml .ci/minimum_versions.py
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python .ci/minimum_versions.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints.txt -e ".[test]"
	touch $@

# The fast part of the suite with every declared floor installed exactly.
test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python .ci/minimum_versions.py --check
	$(MIN_VENV)/bin/python -m pytest -n 2 -m "not slow" -p no:cacheprovider -q

lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(LINT_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The demo's and the test suite's requirements resolve against the public package index alone.
check-resolve: | $(BIN)/python
	$(PUBLIC_PIP) $(BIN)/python -m pip install --quiet --dry-run --ignore-installed ".[cli]"
	$(PUBLIC_PIP) $(BIN)/python -m pip install --quiet --dry-run --ignore-installed ".[test]"
	$(PUBLIC_PIP) $(BIN)/python -m pip install --quiet --dry-run --ignore-installed ".[docs]"
	@echo "the cli, test and docs extras resolve against the public index"

# Build the sdist, install it (not editable) with its test extra, and run pytest from the unpacked tree.
sdist-check:
	PYTHON=$(PYTHON) .ci/sdist_check.sh

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH)

clean:
	rm -rf $(VENV) $(MIN_VENV) build dist src/*.egg-info .pytest_cache
