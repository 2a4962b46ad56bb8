# Two commands for a newcomer: `make repro` (whole pipeline on the embedded sample) and `make test`.
# Both set up the virtual environment first. VENV may point outside the clone (CI caches it by requirements hash).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro test test-fast lint format clean clean-notebooks

# Exact pins from requirements.txt, installed once per requirements change (torch alone is several GB).
# Then the contrib OpenCV again, so that its cv2/ is the one written last whatever order pip chose (requirements.txt
# says why); its pin is read from requirements.txt, and the import fails the recipe (no stamp) if cv2 lacks contrib.
$(VENV)/.requirements.stamp: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check --no-deps --force-reinstall \
	  "$$(grep -E '^opencv-contrib-python-headless==' requirements.txt)"
	$(BIN)/python -c "import cv2; cv2.ximgproc.segmentation.createSelectiveSearchSegmentation"
	touch $@

# The editable install must point at this checkout; a venv shared by several clones is re-pointed (seconds).
install: $(VENV)/.requirements.stamp
	@$(BIN)/python -c "import mlic, sys; sys.exit(not mlic.__file__.startswith('$(CURDIR)/src/'))" 2>/dev/null \
	  || $(BIN)/pip install --disable-pip-version-check --no-deps --no-build-isolation -q -e .

# dvc.yaml holds the stages params.yaml needs (`mlic pipeline`): rewritten first when the params changed which.
repro: install
	$(BIN)/mlic pipeline --write
	$(BIN)/dvc repro
	@echo "submission: $$(ls submissions/*.csv)"; cat reports/metrics.json

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Notebooks are committed without outputs (tests/test_notebooks.py checks it); run this before committing one.
clean-notebooks: install
	$(BIN)/nbstripout notebooks/*.ipynb

clean:
	rm -rf data/raw/sample data/processed data/interim reports submissions/*.csv
