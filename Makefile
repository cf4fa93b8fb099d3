# Developer and CI entry points. Everything runs non-interactively (CI=true, no stdin).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --no-input

.PHONY: install demo baselines test bench full-dataset full-models reference-fm clean distclean

install: $(STAMP)

# torch is pinned and installed first: the CPU wheel lies on disk, while an unpinned torch would
# pull several GB of CUDA libraries. The stamp makes re-runs fast until pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[all,test]'
	touch $@

# The end-to-end demo on 2,000 simulated events (about 13.5 minutes on 2 cores): the data (1,300 labeled events, so
# that about 100 are scored), pretraining `tiny` live (200 steps), the three heads on the frozen reference backbone
# (weights/reference-tiny, `make reference-fm`), on the live `tiny` and as the AdapterOnly baseline, their predictions
# on the test split, the leaderboard. The heads validate once, at their last step (--val-every 100), and train on
# batches of 12,288 spacepoints (the events average about 700 since [12/12]), to keep the
# demo under 15 minutes.
DEMO := build/demo
FM := $(BIN)/fm4npp
REFERENCE := weights/reference-tiny
TUNE := --data $(DEMO)/tpc-pp200 --batch-tokens 12288 --val-every 100
STEPS_tracking := --steps 100 --lr 1e-3 --queries 100
STEPS_pid := --steps 100
STEPS_noise := --steps 100

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/fm4npp-data simulate --events 2000 --out $(DEMO)/sim --seed 1 --events-per-file 500 --workers 2
	$(BIN)/fm4npp-data stats $(DEMO)/sim --out $(DEMO)/figures
	$(BIN)/fm4npp-data stats $(DEMO)/sim --out $(DEMO)/figures --compare release
	$(BIN)/fm4npp-data convert $(DEMO)/sim --out $(DEMO)/events --workers 2
	$(BIN)/fm4npp-data prepare $(DEMO)/events --workers 2
	$(BIN)/fm4npp-data inspect $(DEMO)/events
	$(BIN)/fm4npp-data build $(DEMO)/events --out $(DEMO)/tpc-pp200 --labeled-events 1300
	$(BIN)/fm4npp-data verify $(DEMO)/tpc-pp200
	$(BIN)/fm4npp-data inspect $(DEMO)/tpc-pp200
	$(BIN)/fm4npp-data display $$(ls $(DEMO)/events/*.parquet | head -1) --event 3 --out $(DEMO)/figures/event.png
	$(FM) pretrain --data $(DEMO)/tpc-pp200 --model tiny --steps 200 --lr 2e-3 --val-every 50 --out $(DEMO)/runs/fm-tiny
	for task in tracking pid noise; do \
		case $$task in tracking) steps="$(STEPS_tracking)";; pid) steps="$(STEPS_pid)";; *) steps="$(STEPS_noise)";; esac; \
		$(FM) finetune --task $$task --backbone $(REFERENCE) --out $(DEMO)/runs/FM-reference-$$task $(TUNE) $$steps \
			|| exit 1; \
		$(FM) finetune --task $$task --backbone $(DEMO)/runs/fm-tiny --out $(DEMO)/runs/FM-tiny-$$task $(TUNE) $$steps \
			|| exit 1; \
		$(FM) finetune --task $$task --backbone none --out $(DEMO)/runs/AdapterOnly-$$task $(TUNE) $$steps || exit 1; \
	done
	for model in FM-reference FM-tiny AdapterOnly; do \
		$(FM) predict --data $(DEMO)/tpc-pp200 --out $(DEMO)/predictions/$$model.parquet --run $(DEMO)/runs/$$model-tracking \
			--run $(DEMO)/runs/$$model-pid --run $(DEMO)/runs/$$model-noise || exit 1; \
	done
	$(FM) leaderboard $(DEMO)/predictions/FM-reference.parquet $(DEMO)/predictions/FM-tiny.parquet \
		$(DEMO)/predictions/AdapterOnly.parquet --data $(DEMO)/tpc-pp200 | tee $(DEMO)/leaderboard.md
	$(FM) leaderboard $(DEMO)/predictions/FM-reference.parquet --data $(DEMO)/tpc-pp200 --json - 2>/dev/null \
		> $(DEMO)/FM-reference.json
	@echo "the reference FM's figures and what they were scored on: $(DEMO)/FM-reference.json"

# The paper's graph baselines on the demo's data (not run in CI; after `make demo`): Exa.TrkX (its three stages) and
# EggNet for tracking, the SAGEConv GNN for PID and noise, trained, predicted and scored beside the demo's models.
# Re-runnable: finished runs are kept (--resume).
BASELINE_TUNE := --data $(DEMO)/tpc-pp200 --batch-tokens 4096 --val-every 50 --lr 1e-3 --resume
baselines: $(STAMP)
	@test -f $(DEMO)/tpc-pp200/splits.json || { echo "make baselines trains on the demo's data: run make demo first"; exit 1; }
	$(FM) finetune --task tracking --model exatrkx --out $(DEMO)/runs/ExaTrkX-tracking $(BASELINE_TUNE) --steps 100
	$(FM) finetune --task tracking --model eggnet --out $(DEMO)/runs/EggNet-tracking $(BASELINE_TUNE) --steps 500
	for task in pid noise; do \
		$(FM) finetune --task $$task --model gnn --out $(DEMO)/runs/GNN-$$task $(BASELINE_TUNE) --steps 100 || exit 1; \
	done
	$(FM) predict --data $(DEMO)/tpc-pp200 --out $(DEMO)/predictions/ExaTrkX+GNN.parquet \
		--run $(DEMO)/runs/ExaTrkX-tracking --run $(DEMO)/runs/GNN-pid --run $(DEMO)/runs/GNN-noise
	$(FM) predict --data $(DEMO)/tpc-pp200 --out $(DEMO)/predictions/EggNet.parquet --run $(DEMO)/runs/EggNet-tracking
	$(FM) leaderboard $(DEMO)/predictions/FM-reference.parquet $(DEMO)/predictions/FM-tiny.parquet \
		$(DEMO)/predictions/AdapterOnly.parquet $(DEMO)/predictions/ExaTrkX+GNN.parquet $(DEMO)/predictions/EggNet.parquet \
		--data $(DEMO)/tpc-pp200 | tee $(DEMO)/leaderboard-baselines.md

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -W error

# The full-size recipe (not run in CI): 90k labeled + >= 400k pretraining events; see README "Full size".
full-dataset: $(STAMP)
	BIN=$(BIN) bash benchmarks/full_dataset.sh

# The full-size model recipe (not run in CI; a machine with a GPU): m1..m3 on the full-size repository; README.
full-models: $(STAMP)
	BIN=$(BIN) bash benchmarks/full_models.sh

# The reference backbone (not run in CI; about 45 minutes on 2 cores): the study dataset and `tiny` pretrained on its ~15.6k
# pretraining events, copied to weights/reference-tiny/ (the demo's FM row); README "Reference backbone".
reference-fm: $(STAMP)
	BIN=$(BIN) bash benchmarks/reference_fm.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_knn.py
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_loader.py
	-$(BIN)/python benchmarks/bench_ssd.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_adapters.py
	$(BIN)/python benchmarks/bench_leaderboard.py
	$(BIN)/python benchmarks/bench_graphs.py

# Build outputs and caches; the virtual environment is kept (see distclean).
clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.nbi' -o -name '*.nbc' \) -print \
		| xargs rm -rf

distclean: clean
	rm -rf $(VENV)
