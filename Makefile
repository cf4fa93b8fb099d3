# Developer and CI entry points. Everything runs non-interactively (CI=true, no stdin).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --no-input

.PHONY: install demo test bench full-dataset clean distclean

install: $(STAMP)

# torch is pinned and installed first: the CPU wheel lies on disk, while an unpinned torch would
# pull several GB of CUDA libraries. The stamp makes re-runs fast until pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[all,test]'
	touch $@

demo: $(STAMP)
	rm -rf build/demo
	$(BIN)/fm4npp-data simulate --events 300 --out build/demo/sim --seed 1 --events-per-file 100 --workers 2
	$(BIN)/fm4npp-data stats build/demo/sim --out build/demo/figures
	$(BIN)/fm4npp-data convert build/demo/sim --out build/demo/events --workers 2
	$(BIN)/fm4npp-data prepare build/demo/events --workers 2
	$(BIN)/fm4npp-data inspect build/demo/events
	$(BIN)/fm4npp-data build build/demo/events --out build/demo/tpc-pp200
	$(BIN)/fm4npp-data verify build/demo/tpc-pp200
	$(BIN)/fm4npp-data display $$(ls build/demo/events/*.parquet | head -1) --event 3 --out build/demo/figures/event.png

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -W error

# The full-size recipe (not run in CI): 90k labeled + >= 400k pretraining events; see README "Full size".
full-dataset: $(STAMP)
	BIN=$(BIN) bash benchmarks/full_dataset.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_knn.py
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_loader.py
	-$(BIN)/python benchmarks/bench_ssd.py

# Build outputs and caches; the virtual environment is kept (see distclean).
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.nbi' -o -name '*.nbc' \) -print \
		| xargs rm -rf

distclean: clean
	rm -rf $(VENV)
