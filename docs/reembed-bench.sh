#!/bin/bash
# Re-embedding throughput: enrols the first photo of 200 LFW people (../shared/eval) on
# the `open` pack in a throw-away server, moves the index to `insightface` with
# `facesearch reembed`, and prints the job's own duration and images per second.
# With SEARCHES=1, one client searches back to back while the job runs, and the search
# latency is printed idle and during the job (all answers must be 200).
# Usage: [SEARCHES=1] docs/reembed-bench.sh [path/to/facesearch]   (default: facesearch on PATH)
set -eu
B=${1:-facesearch}
HERE=$(cd "$(dirname "$0")/.." && pwd)
L=$HERE/../shared/eval/lfw-deepfunneled/images
D=$(mktemp -d)
export FACESEARCH_ADMIN_PASSWORD=bench-password-1 FACESEARCH_PASSWORD=bench-password-1
export FACESEARCH_URL=http://127.0.0.1:18111
: > "$D/out.log"
"$B" serve --data-dir "$D/data" --bind 127.0.0.1:18111 > "$D/out.log" 2> "$D/err.log" &
PID=$!
trap 'kill $PID; rm -rf "$D"' EXIT
for _ in $(seq 1 120); do grep -q ready "$D/out.log" && break; sleep 1; done
ID=$("$B" index create bench --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
n=0
for p in $(ls "$L"); do
  f=$(ls "$L/$p"/*.jpg | head -1)
  "$B" enrol --index "$ID" "$f" --name "$p" > /dev/null 2>&1 && n=$((n + 1))
  [ $n -ge 200 ] && break
done
echo "enrolled $n"
if [ "${SEARCHES:-0}" = 1 ]; then
  # Search latency (liveness off) idle, then while the job runs.
  PROBE=$(ls "$L/$(ls "$L" | head -1)"/*.jpg | head -1)
  search() {
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -u admin:bench-password-1 \
      -F source_image=@"$PROBE" -F target_index_ids="$ID" "$FACESEARCH_URL/face/search?perform_liveness_check=false"
  }
  median() { awk '$1 != 200 { bad++ } { print $2 } END { if (bad) print "non-200 answers: " bad > "/dev/stderr" }' \
    | sort -n | awk '{ a[NR] = $1 } END { printf "%d searches, median %.0f ms\n", NR, 1000 * a[int((NR + 1) / 2)] }'; }
  for _ in $(seq 1 20); do search; done | median | sed 's/^/idle: /'
  "$B" reembed --index "$ID" --pack insightface --no-wait > /dev/null
  while curl -s -u admin:bench-password-1 "$FACESEARCH_URL/face/index/$ID/reembed" | grep -q '"state":"running"'; do
    search
  done | median | sed 's/^/during the re-embedding: /'
else
  /usr/bin/time -f "facesearch reembed: wall %e s" "$B" reembed --index "$ID" --pack insightface --poll-interval 0.2
fi
curl -s -u admin:bench-password-1 "$FACESEARCH_URL/face/index/$ID/reembed" | python3 -c '
import json, sys, datetime
j = json.load(sys.stdin)["response"]
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
d = (t(j["finished_at"]) - t(j["created_at"])).total_seconds()
print("job %s: %d of %d images, %d without a face, in %.2f s = %.1f images/s"
      % (j["state"], j["done"], j["total"], j["failed"], d, j["done"] / d))'
