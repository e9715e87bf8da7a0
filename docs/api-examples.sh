#!/usr/bin/env bash
# Runs the curl examples of docs/API.md against a running server and prints each
# command with its answer. Usage:
#   FACESEARCH_ADMIN_PASSWORD=change-me cargo run --release -- serve --data-dir /tmp/fs-demo &
#   FACESEARCH_PASSWORD=change-me docs/api-examples.sh
set -u
URL=${FACESEARCH_URL:-http://127.0.0.1:8080}
AUTH="admin:${FACESEARCH_PASSWORD:?set FACESEARCH_PASSWORD}"
EVAL=${EVAL:-../shared/eval}
run() { printf '$'; printf ' %q' "$@" | sed "s/$AUTH/admin:change-me/g"; echo; "$@"; echo; echo; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

run curl -s "$URL/healthz"
run curl -s "$URL/readyz"
run curl -s -u "$AUTH" -X POST "$URL/face/index" -H 'Content-Type: application/json' \
  -d '{"index_name":"customers","title":"Customers","description":"KYC-verified customers"}'
INDEX=$(curl -s -u "$AUTH" "$URL/face/index/details" | json "['response'][0]['id']")
run curl -s -u "$AUTH" "$URL/face/index/$INDEX"
run curl -s -u "$AUTH" -X POST "$URL/face/index/$INDEX/records" -F image=@"$EVAL/deepface/img1.jpg" \
  -F name="Angelina Jolie" -F dob=1975-06-04 -F nationality=US -F gender=F -F id_no=P1234567 \
  -F watch_list=pep -F reference=cust-0001
RECORD=$(curl -s -u "$AUTH" -X POST "$URL/face/index/$INDEX/records" -F image=@"$EVAL/deepface/img1.jpg" \
  -F reference=cust-0001 | json "['response']['record_id']")
run curl -s -u "$AUTH" "$URL/face/index/details?action_type=FACE_SEARCH"
run curl -s -u "$AUTH" -X POST "$URL/face/search?perform_liveness_check=true" \
  -F source_image=@"$EVAL/deepface/img2.jpg" -F target_index_ids="$INDEX"
run curl -s -u "$AUTH" -X POST "$URL/face/search?perform_liveness_check=false" \
  -F source_image=@"$EVAL/deepface/img13.jpg" -F target_index_ids="$INDEX"
IMAGE=$(curl -s -u "$AUTH" "$URL/face/index/$INDEX/records/$RECORD" | json "['response']['image_ids'][0]")
echo "\$ curl -s -u admin:change-me $URL/media/file/download/$IMAGE | head -c 160"
curl -s -u "$AUTH" "$URL/media/file/download/$IMAGE" | head -c 160; echo; echo
run curl -s -u "$AUTH" "$URL/face/index/$INDEX/records?limit=10"
run curl -s -u "$AUTH" -X PATCH "$URL/face/index/$INDEX/records/$RECORD" -H 'Content-Type: application/json' \
  -d '{"watch_list":["pep","sanctions"]}'
run curl -s -u "$AUTH" -X POST "$URL/face/index/$INDEX/records/$RECORD/images" -F image=@"$EVAL/deepface/img4.jpg"
# errors
run curl -s -i "$URL/face/index/details"
run curl -s -u "$AUTH" -X POST "$URL/face/search" -F source_image=@"$EVAL/deepface/img2.jpg" -F target_index_ids=no-such-index
run curl -s -u "$AUTH" -X POST "$URL/face/search" -F source_image=@"$EVAL/deepface/img2.jpg" -F target_index_ids="$INDEX" -F min_match_score=101
run curl -s -u "$AUTH" -X POST "$URL/face/search" -F source_image=@"$EVAL/compreface/sample_images/017_0.jpg" -F target_index_ids="$INDEX"
run curl -s -u "$AUTH" -X POST "$URL/face/search" -F source_image=@"$EVAL/compreface/format_tests/truncated.jpg" -F target_index_ids="$INDEX"
run curl -s -u "$AUTH" -X POST "$URL/face/search" -F source_image=@"$EVAL/pyimagesearch-liveness/fake/108.png" -F target_index_ids="$INDEX"
run curl -s -u "$AUTH" -X POST "$URL/face/index/$INDEX/records" -F image=@"$EVAL/deepface/couple.jpg" -F name=Someone
run curl -s -u "$AUTH" -X DELETE -o /dev/null -w '%{http_code}\n' "$URL/face/index/$INDEX/records/$RECORD"
run curl -s -u "$AUTH" -X DELETE -o /dev/null -w '%{http_code}\n' "$URL/face/index/$INDEX"
