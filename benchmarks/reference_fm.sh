#!/usr/bin/env bash
# The reference backbone recipe (not run in CI; about 45 minutes on 2 CPU cores): simulate a study dataset, build it, and
# pretrain the reference `tiny` on its pretraining part; then copy the run's weights, config, log and data identity
# into weights/reference-tiny/, which the demo's FM row reads. Run as `make reference-fm` (REF=folder, EVENTS=
# collisions, STEPS=..., MODEL=tiny). The study dataset (24,000 collisions: about 20,500 events with a TPC
# spacepoint, 4,000 labeled) also serves `fm4npp study data-efficiency` (README "Studies"). Resumable: a finished
# step is skipped, and pretraining goes on from its last checkpoint.
set -euo pipefail
REF=${REF:-build/ref}
EVENTS=${EVENTS:-24000}
STEPS=${STEPS:-2000}
MODEL=${MODEL:-tiny}
PHI=${PHI:-circular}
BIN=${BIN:-.venv/bin}
OUT=${OUT:-weights/reference-$MODEL}
mkdir -p "$REF"
step() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "== $name: $((SECONDS - start)) s" | tee -a "$REF/times.txt"
}
if [ ! -f "$REF/tpc-pp200/splits.json" ]; then
  rm -rf "$REF/sim" "$REF/events" "$REF/tpc-pp200"
  step simulate "$BIN/fm4npp-data" simulate --events "$EVENTS" --out "$REF/sim" --seed 7 --events-per-file 4000 \
    --workers 2
  step convert "$BIN/fm4npp-data" convert "$REF/sim" --out "$REF/events" --workers 2
  rm -rf "$REF/sim"
  step prepare "$BIN/fm4npp-data" prepare "$REF/events" --workers 2
  step build "$BIN/fm4npp-data" build "$REF/events" --out "$REF/tpc-pp200" --labeled-events 4000 --shard-events 4000
fi
"$BIN/fm4npp-data" inspect "$REF/tpc-pp200"
RUN="$REF/runs/$MODEL-$PHI"
if [ -f "$RUN/training.json" ]; then resume=(--resume); else resume=(); fi
step "pretrain $MODEL" "$BIN/fm4npp" pretrain --data "$REF/tpc-pp200" --model "$MODEL" --phi "$PHI" --steps "$STEPS" \
  --lr 2e-3 --val-every 500 --out "$RUN" "${resume[@]}"
mkdir -p "$OUT"
cp "$RUN/config.json" "$RUN/model.safetensors" "$RUN/log.csv" "$RUN/loss.png" "$OUT/"
"$BIN/python" - "$REF/tpc-pp200" "$OUT" <<'PY'
import hashlib, json, sys
from pathlib import Path
repo, out = Path(sys.argv[1]), Path(sys.argv[2])
splits = json.loads((repo / "splits.json").read_text())
identity = {
    "repository": "the study dataset of benchmarks/reference_fm.sh (fm4npp-data simulate --seed 7)",
    "splits_sha256": hashlib.sha256((repo / "splits.json").read_bytes()).hexdigest(),
    "pretrain_events": {s: v["events"] for s, v in splits["configs"]["pretrain"].items()},
}
(out / "data.json").write_text(json.dumps(identity, indent=2) + "\n")
PY
du -sh "$OUT"
