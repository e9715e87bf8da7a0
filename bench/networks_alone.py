#!/usr/bin/env python3
"""The pack `open` networks alone, in Python onnxruntime: what a single run of each
model costs on random input with 1 (or more: --threads) intra-op threads, and whether
two processes running them side by side (two single-threaded workers) get twice the
work done.

It bounds what our own pipeline can reach: `facesearch bench pipeline` reports each
stage's network time, and this says what onnxruntime itself takes for the same
models on the same machine (README, Performance).

Usage: python3 bench/networks_alone.py [--rounds N] [--liveness-runs K] [--threads 1,2]
Needs: onnxruntime, numpy; the models in FACESEARCH_MODELS_DIR or ~/.cache/facesearch/models.
"""
import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import onnxruntime as ort

MODELS = os.environ.get("FACESEARCH_MODELS_DIR", os.path.expanduser("~/.cache/facesearch/models"))
NETWORKS = [
    ("face_detection_yunet_2023mar.onnx", (1, 3, 640, 640)),
    ("face_recognition_sface_2021dec.onnx", (1, 3, 112, 112)),
    ("fr_liveness.onnx", (1, 3, 128, 128)),
]


def sessions(threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    rng = np.random.default_rng(0)
    out = []
    for name, shape in NETWORKS:
        s = ort.InferenceSession(os.path.join(MODELS, name), opts, providers=["CPUExecutionProvider"])
        out.append((name, s, {s.get_inputs()[0].name: rng.random(shape, dtype=np.float32) * 255}))
    return out


def per_network(rounds, threads):
    for name, s, feed in sessions(threads):
        for _ in range(5):
            s.run(None, feed)
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            s.run(None, feed)
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"{name}, {threads} thread(s): median {times[len(times) // 2] * 1e3:.2f} ms, min {times[0] * 1e3:.2f} ms", flush=True)


def worker(rounds, liveness_runs, queue):
    (_, det, det_in), (_, emb, emb_in), (_, live, live_in) = sessions()

    def one_photo():
        det.run(None, det_in)
        emb.run(None, emb_in)
        for _ in range(liveness_runs):
            live.run(None, live_in)

    for _ in range(3):
        one_photo()
    t = time.perf_counter()
    for _ in range(rounds):
        one_photo()
    queue.put(rounds / (time.perf_counter() - t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--liveness-runs", type=int, default=2, help="liveness model runs per photo (the shipped check: 2)")
    ap.add_argument("--threads", default="1", help="intra-op threads per session to time each network with, e.g. 1,2")
    args = ap.parse_args()
    print(f"onnxruntime {ort.__version__}")
    for threads in [int(t) for t in args.threads.split(",")]:
        per_network(args.rounds, threads)
    print(f"one photo's networks = YuNet + SFace + {args.liveness_runs} liveness runs, one thread per process")
    for procs in (1, 2, 1, 2):
        queue = mp.Queue()
        ps = [mp.Process(target=worker, args=(args.rounds, args.liveness_runs, queue)) for _ in range(procs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        rates = [queue.get() for _ in ps]
        print(f"{procs} process(es): {sum(rates):.1f} photos/s ({', '.join(f'{r:.1f}' for r in rates)})", flush=True)


if __name__ == "__main__":
    main()
