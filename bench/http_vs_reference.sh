#!/bin/bash
# Issue 18's HTTP target: a search's p50 over HTTP (liveness on) against the Python
# reference's decode → embed of the same photo, run right after in the same session.
#
# Usage: bench/http_vs_reference.sh BINARY [PHOTO...]
#   BINARY: a release build of facesearch (e.g. target/release/facesearch)
#   PHOTO:  probes (default: the 1920×1080 JPEG and the phone photo of ../shared/eval)
# Needs: python3 with onnxruntime, numpy, opencv-python-headless (see README).
set -euo pipefail
BIN=$1
shift
EVAL=${EVAL:-../shared/eval}
PHOTOS=("$@")
[ ${#PHOTOS[@]} -eq 0 ] && PHOTOS=("$EVAL/face_recognition/examples/obama-1080p.jpg" "$EVAL/deepface/img1.jpg")
PORT=${PORT:-18181}
DATA=$(mktemp -d)
export FACESEARCH_PASSWORD=bench-Password-1 FACESEARCH_URL=http://127.0.0.1:$PORT
FACESEARCH_ADMIN_PASSWORD=$FACESEARCH_PASSWORD "$BIN" serve --data-dir "$DATA" --bind 127.0.0.1:$PORT >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do curl -sf "$FACESEARCH_URL/readyz" >/dev/null 2>&1 && break; sleep 1; done
INDEX=$("$BIN" index create bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ENROL=()
for person in $(ls "$EVAL/lfw-deepfunneled/images" | head -40); do
  ENROL+=(--image "$(ls "$EVAL/lfw-deepfunneled/images/$person/"*_0001.jpg)")
done
"$BIN" bench enrol --index "$INDEX" "${ENROL[@]}" --requests 40 --concurrency 1
for photo in "${PHOTOS[@]}"; do
  echo "== $photo"
  "$BIN" bench search --index "$INDEX" --image "$photo" --requests 30 --concurrency 1
  python3 "$(dirname "$0")/reference_pipeline.py" --iterations 15 "$photo"
done
