#!/bin/bash
# Re-embedding throughput: enrols the first photo of 200 LFW people (../shared/eval) on
# the `open` pack in a throw-away server, moves the index to `insightface` with
# `facesearch reembed`, and prints the job's own duration and images per second.
# Usage: docs/reembed-bench.sh [path/to/facesearch]   (default: facesearch on PATH)
set -eu
B=${1:-facesearch}
HERE=$(cd "$(dirname "$0")/.." && pwd)
L=$HERE/../shared/eval/lfw-deepfunneled/images
D=$(mktemp -d)
export FACESEARCH_ADMIN_PASSWORD=bench-password-1 FACESEARCH_PASSWORD=bench-password-1
export FACESEARCH_URL=http://127.0.0.1:18111
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
/usr/bin/time -f "facesearch reembed: wall %e s" "$B" reembed --index "$ID" --pack insightface --poll-interval 0.2
curl -s -u admin:bench-password-1 "$FACESEARCH_URL/face/index/$ID/reembed" | python3 -c '
import json, sys, datetime
j = json.load(sys.stdin)["response"]
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
d = (t(j["finished_at"]) - t(j["created_at"])).total_seconds()
print("job %s: %d of %d images, %d without a face, in %.2f s = %.1f images/s"
      % (j["state"], j["done"], j["total"], j["failed"], d, j["done"] / d))'
