# Two commands for a newcomer: `make repro` (whole pipeline on the embedded sample) and `make test`.
# Both set up the virtual environment first. VENV may point outside the clone (CI caches it by the lock's hash).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install lock dep repro test test-fast lint format clean clean-notebooks

# The environment is requirements.lock: every package (209), exact version and sha256 hashes, compiled by pip-compile
# from the direct dependencies in requirements.in (`make lock`). pip-sync then makes the venv hold exactly the lock:
# it adds, bumps and removes (tests/test_environment.py compares the two). Then the contrib OpenCV again, so that its
# cv2/ is the one written last whatever order pip chose (requirements.in says why); the import fails the recipe (no
# stamp) if cv2 lacks contrib. Runs once per lock change (torch and its CUDA wheels are several GB).
LOCK_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url
$(VENV)/.requirements.stamp: requirements.lock
	test -x $(BIN)/pip-sync || { $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/pip install --disable-pip-version-check --require-hashes --no-deps -r requirements.lock; }
	$(BIN)/pip-sync --pip-args "--disable-pip-version-check --no-deps" requirements.lock
	awk '/^opencv-contrib-python-headless==/{p=1} p{print} p && !/\\$$/{exit}' requirements.lock > $(VENV)/contrib.lock
	$(BIN)/pip install --disable-pip-version-check --require-hashes --no-deps --force-reinstall -r $(VENV)/contrib.lock
	$(BIN)/python -c "import cv2; cv2.ximgproc.segmentation.createSelectiveSearchSegmentation"
	touch $@

# Re-resolve requirements.lock from requirements.in, keeping every other pin; UPGRADE=scipy bumps one package to
# the newest its dependants allow. Minutes here: pip-compile hashes every wheel of each pinned version.
lock:
	test -x $(BIN)/pip-compile || $(MAKE) $(VENV)/.requirements.stamp
	$(BIN)/pip-compile $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade-package $(UPGRADE)) -o requirements.lock requirements.in

# Add or bump one direct dependency, in one command: `make dep PIN=rich==15.0.0`. Its line in requirements.in is
# replaced (or appended), the lock re-resolved for it, and the venv synced to the lock.
dep:
	@test -n "$(PIN)" || { echo "usage: make dep PIN=name==version"; exit 2; }
	name=$$(echo '$(PIN)' | sed -E 's/[=<>!~;[ ].*//'); \
	if grep -qiE "^$$name[=<>!~;[ ]" requirements.in; \
	then sed -i -E "s/^$$name[=<>!~;[ ][^ ]*/$(PIN)/I" requirements.in; \
	else echo '$(PIN)' >> requirements.in; fi; \
	$(MAKE) lock UPGRADE=$$name && $(MAKE) install

# The editable install must point at this checkout; a venv shared by several clones is re-pointed (seconds).
install: $(VENV)/.requirements.stamp
	@$(BIN)/python -c "import mlic, sys; sys.exit(not mlic.__file__.startswith('$(CURDIR)/src/'))" 2>/dev/null \
	  || $(BIN)/pip install --disable-pip-version-check --no-deps --no-build-isolation -q -e .

# dvc.yaml holds the stages params.yaml needs (`mlic pipeline`): rewritten first when the params changed which.
# The sample's dvc.lock is committed, so its bytes must not depend on the CPU: oneDNN picks its convolution kernels by
# instruction set, and AVX512 (bf16/VNNI) kernels train other weights than AVX2 ones (README, "Same bytes on every
# machine"). The pin makes any x86-64 machine with AVX2 compute as an AVX2 one does (+35% train time here).
# MLIC_CPU_ISA=native lifts it; real runs choose for themselves.
MLIC_CPU_ISA ?= avx2
ifeq ($(MLIC_CPU_ISA),avx2)
repro: export ONEDNN_MAX_CPU_ISA := AVX2
repro: export DNNL_MAX_CPU_ISA := AVX2
repro: export ATEN_CPU_CAPABILITY := avx2
endif
repro: install
	$(BIN)/mlic pipeline --write
	$(BIN)/dvc repro
	@echo "submission: $$(ls submissions/*.csv)"; cat reports/metrics.json

# `make test`: everything, under 12 minutes on 2 cores. `make test-fast`: what needs no DVC project, trained run or
# long export, in about a minute; a test of over a second there belongs in the slow tier (@pytest.mark.slow), and
# the durations line names any that crept in.
test: install
	$(BIN)/pytest --durations=10

test-fast: install
	$(BIN)/pytest -m "not slow" --durations=10 --durations-min=1.0

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
