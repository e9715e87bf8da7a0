#!/usr/bin/env python3
"""Peak memory (RSS) of a facesearch server under a flood of large uploads.

Starts BINARY (`facesearch serve`, default settings unless --server-arg is given) on a
free port with a throw-away data directory, creates an index and USERS searchers
granted it, and warms up (one search per searcher). Then it resets the server's peak
RSS (`echo 5 > /proc/PID/clear_refs`, which sets VmHWM to the current RSS), opens
UPLOADS concurrent `POST /face/search` uploads of SIZE bytes each at full speed,
spread round-robin over the searchers, while an admin asks `GET /users` every 0.5 s
and a thread samples VmRSS every 20 ms. It prints the RSS before, the peak (VmHWM and
the highest sample), and the answers (status and error code) of the uploads and of
the admin's requests.

The uploaded image is a real face photo padded to SIZE bytes with JPEG comment
segments (a valid JPEG that decodes like the small photo), so the memory measured is
that of receiving and parsing the bodies, not of decoding huge images.

Usage:
  bench/upload_flood.py target/debug/facesearch                     # 60 x 15.7 MB, 1 searcher
  bench/upload_flood.py target/debug/facesearch --users 4           # the same from 4 searchers
Needs only the Python standard library; Linux (/proc).
"""

import argparse
import base64
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ADMIN_PASSWORD = "flood-admin-Secret-42"
PASSWORD = "flood-searcher-Password-1"
BOUNDARY = "uploadFloodBoundary7x9"
DEFAULT_PHOTO = Path(__file__).resolve().parent.parent.parent / "shared/eval/lfw-deepfunneled/images/Jiang_Zemin/Jiang_Zemin_0001.jpg"


def auth(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(addr, method, path, user, password, body=None, content_type=None, timeout=300):
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    headers = {"Authorization": auth(user, password)}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        return resp.status, payload
    except OSError as e:
        return None, {"error": {"code": type(e).__name__}}
    finally:
        conn.close()


def padded_jpeg(photo, size):
    """The photo with comment segments (FF FE) after its SOI marker, `size` bytes in all."""
    data = photo.read_bytes()
    assert data[:2] == b"\xff\xd8", f"{photo} is not a JPEG"
    need = size - len(data)
    segments = []
    while need > 0:
        payload = min(need - 4, 65533)
        if payload < 0:
            raise SystemExit(f"cannot pad {photo} to exactly {size} bytes")
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + b"\x00" * payload)
        need -= payload + 4
    out = data[:2] + b"".join(segments) + data[2:]
    assert len(out) == size, (len(out), size)
    return out


def search_body(index_id, image):
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"target_index_ids\"\r\n\r\n{index_id}\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"source_image\"; filename=\"big.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--uploads", type=int, default=60)
    ap.add_argument("--size", type=int, default=15_700_000, help="bytes of each image (default 15.7 MB)")
    ap.add_argument("--users", type=int, default=1, help="searchers the uploads are spread over")
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    ap.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="upload-flood-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_") or k == "FACESEARCH_MODELS_DIR"}
    env.update(FACESEARCH_ADMIN_PASSWORD=ADMIN_PASSWORD, FACESEARCH_LOG="error")
    cmd = [args.binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir, "--exit-on-stdin-close",
           "--workers", "2", *args.server_arg]
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    addr = None
    for line in server.stdout:
        m = re.match(r"facesearch listening on http://([\d.]+):(\d+)", line)
        if m:
            addr = (m.group(1), int(m.group(2)))
        if line.startswith("facesearch ready"):
            break
    else:
        raise SystemExit("the server exited before it was ready")
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    pid = server.pid
    print(f"server: {' '.join(cmd[1:])} (pid {pid})")

    try:
        status, index = request(addr, "POST", "/face/index", "admin", ADMIN_PASSWORD,
                                json.dumps({"index_name": "flood", "title": "flood", "description": "flood",
                                            "index_type": "INTERNAL"}), "application/json")
        assert status == 201, (status, index)
        index_id = index["response"]["id"]
        users = [f"searcher{i}" for i in range(args.users)]
        for u in users:
            status, _ = request(addr, "POST", "/users", "admin", ADMIN_PASSWORD,
                                json.dumps({"username": u, "password": PASSWORD, "role": "searcher"}),
                                "application/json")
            assert status == 201, status
            status, _ = request(addr, "PUT", f"/users/{u}/grants/{index_id}", "admin", ADMIN_PASSWORD)
            assert status in (200, 204), status
        body = search_body(index_id, padded_jpeg(args.photo, args.size))
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        for u in users:
            status, payload = request(addr, "POST", "/face/search?perform_liveness_check=false", u, PASSWORD,
                                      body, content_type)
            assert status == 200, (status, payload)

        rss_before = status_kib(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(status_kib(pid, "VmRSS"))
                time.sleep(0.02)

        admin_answers = []

        def admin_probe():
            while not stop.is_set():
                t = time.monotonic()
                status, payload = request(addr, "GET", "/users", "admin", ADMIN_PASSWORD, timeout=60)
                code = (payload or {}).get("error", {}).get("code", "") if isinstance(payload, dict) else ""
                admin_answers.append((status, code, round(time.monotonic() - t, 3)))
                stop.wait(0.5)

        answers = []

        def upload(i):
            t = time.monotonic()
            status, payload = request(addr, "POST", "/face/search?perform_liveness_check=false",
                                      users[i % len(users)], PASSWORD, body, content_type)
            code = (payload or {}).get("error", {}).get("code", "") if isinstance(payload, dict) else ""
            answers.append((status, code, time.monotonic() - t))

        watchers = [threading.Thread(target=sample), threading.Thread(target=admin_probe)]
        for w in watchers:
            w.start()
        t0 = time.monotonic()
        floods = [threading.Thread(target=upload, args=(i,)) for i in range(args.uploads)]
        for f in floods:
            f.start()
        for f in floods:
            f.join()
        took = time.monotonic() - t0
        stop.set()
        for w in watchers:
            w.join()
        hwm = status_kib(pid, "VmHWM")
        rss_after = status_kib(pid, "VmRSS")

        mib = lambda kib: f"{kib / 1024:.0f} MiB"
        print(f"flood: {args.uploads} concurrent uploads of {len(body):,} bytes (image {args.size:,}) "
              f"from {args.users} searcher(s), done in {took:.1f} s")
        print(f"RSS before {mib(rss_before)}; peak during the flood: VmHWM {mib(hwm)}, "
              f"highest 20 ms sample {mib(max(samples))}; RSS after {mib(rss_after)}")
        print(f"peak growth: {mib(hwm - rss_before)}")
        print("uploads answered:", dict(Counter(f"{s} {c}".strip() for s, c, _ in answers)))
        refused = [d for s, c, d in answers if s == 503]
        if refused:
            print(f"  503s after {min(refused):.2f}-{max(refused):.2f} s")
        print("admin GET /users during the flood:", dict(Counter(f"{s} {c}".strip() for s, c, _ in admin_answers)),
              f"slowest {max(d for _, _, d in admin_answers):.2f} s")
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        subprocess.run(["rm", "-rf", data_dir], check=False)


if __name__ == "__main__":
    sys.exit(main())
