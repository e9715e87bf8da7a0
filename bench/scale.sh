#!/usr/bin/env bash
# End-to-end figures at gallery scale, all in one run on one machine:
#   1. seed FACES synthetic faces into a fresh data directory (bench seed),
#   2. first start (builds the vector index from the store, saves a snapshot), stop,
#   3. timed second start (cold start from the snapshot),
#   4. POST /face/search latency with 1 and 8 clients (1080p JPEG, liveness on),
#   5. enrolment images/s (50 LFW photos, 2 clients),
#   6. the Python reference (bench/reference_pipeline.py) on the same photos.
# Usage: bench/scale.sh [FACES] [PROBE.jpg]   (run from the repository root after
# `cargo build --release`; needs python3 with onnxruntime, numpy, opencv-python-headless)
set -euo pipefail
FACES=${1:-1000000}
PROBE=${2:-/tmp/probe1080.jpg}
BIN=target/release/facesearch
WORK=$(mktemp -d)
DATA=$WORK/data
PORT=${PORT:-18080}
export FACESEARCH_ADMIN_PASSWORD=bench-Password-1 FACESEARCH_PASSWORD=bench-Password-1
export FACESEARCH_URL=http://127.0.0.1:$PORT
trap 'kill ${SERVER:-} $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== seeding $FACES faces"
INDEX=$($BIN bench seed --data-dir "$DATA" --faces "$FACES" | sed -n 's/.*(\(.*\)) now has.*/\1/p')

start() {  # sets SERVER, and STARTUP to the seconds from launch to the ready line
  rm -f "$WORK/out" "$WORK/err"
  local t0=$(date +%s.%N)
  $BIN serve --data-dir "$DATA" --bind 127.0.0.1:$PORT > "$WORK/out" 2> "$WORK/err" &
  SERVER=$!
  until grep -q "facesearch ready" "$WORK/out" 2>/dev/null; do
    kill -0 $SERVER 2>/dev/null || { cat "$WORK/err"; exit 1; }
    sleep 0.05
  done
  STARTUP=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop() { kill -INT $SERVER; wait $SERVER || true; }

start; echo "== first start (index built from the store): $STARTUP s"; grep "facesearch ready" "$WORK/out"; stop
start; echo "== second start (cold start from the snapshot): $STARTUP s"; grep "facesearch ready" "$WORK/out"
grep "vector index loaded" "$WORK/err" | sed 's/\x1b\[[0-9;]*m//g' | tail -1 || true
echo "== RSS of the server: $(ps -o rss= -p $SERVER) KiB"

# The first photo of the first 50 LFW people (head closes the pipe early: no pipefail here).
LFW=$(set +o pipefail; ls -d ../shared/eval/lfw-deepfunneled/images/*/ | head -50 | while read -r d; do ls "$d"*.jpg | head -1; done)
for c in 1 8; do
  echo "== search, $c client(s)"
  $BIN bench search --index "$INDEX" --image "$PROBE" --requests $((40 * c)) --concurrency $c
done
echo "== enrolment, 2 clients"
$BIN bench enrol --index "$INDEX" $(for p in $LFW; do echo --image "$p"; done) --requests 100 --concurrency 2
stop
echo "== Python reference on the same photos"
python3 bench/reference_pipeline.py --iterations 20 "$PROBE" $LFW | python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["photos"][0]
print("probe: decode+detect+align+embed %.1f ms, liveness %.1f ms" % (p["detect_embed_ms"], p["liveness_ms"]))
print("enrolment-like throughput over the probe and %d LFW photos: %.1f images/s" % (len(r["photos"]) - 1, r["enrol_images_per_s"]))'
