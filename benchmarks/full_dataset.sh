#!/usr/bin/env bash
# The full-size recipe: simulate, convert, prepare and build a dataset of the published labeled size (90k labeled
# events) plus a pretraining part of at least 400k events, on one 2-core machine; prints the time of each step and
# the disk it takes. Run as `make full-dataset` (FULL=folder, EVENTS=collisions; about 13 % of the simulated
# collisions leave no TPC spacepoint and are left out of the repository, hence 575,000 for 490,000 events).
set -euo pipefail
FULL=${FULL:-build/full}
EVENTS=${EVENTS:-575000}
WORKERS=${WORKERS:-2}
BIN=${BIN:-.venv/bin}
rm -rf "$FULL"
mkdir -p "$FULL"
step() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "== $name: $((SECONDS - start)) s" | tee -a "$FULL/times.txt"
}
step simulate "$BIN/fm4npp-data" simulate --events "$EVENTS" --out "$FULL/sim" --seed 2026 --events-per-file 25000 \
  --workers "$WORKERS"
du -sh "$FULL/sim" | tee -a "$FULL/times.txt"
step convert "$BIN/fm4npp-data" convert "$FULL/sim" --out "$FULL/events" --workers "$WORKERS"
rm -rf "$FULL/sim"  # the ROOT files are not needed once converted (the manifest keeps their sha256)
step prepare "$BIN/fm4npp-data" prepare "$FULL/events" --workers "$WORKERS"
du -sh "$FULL/events" | tee -a "$FULL/times.txt"
step build "$BIN/fm4npp-data" build "$FULL/events" --out "$FULL/tpc-pp200" --workers "$WORKERS"
step verify "$BIN/fm4npp-data" verify "$FULL/tpc-pp200"
du -sh "$FULL/tpc-pp200" | tee -a "$FULL/times.txt"
cat "$FULL/times.txt"
