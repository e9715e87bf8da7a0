#!/usr/bin/env python3
"""Baseline for `facesearch bench index --faiss`: faiss's exact IndexFlatIP over the
same gallery and queries, one query per call (as a search API serves them), k results.

Usage: faiss_flat.py GALLERY.npy QUERIES.npy K   (prints JSON: p50_ms, p99_ms, threads)
Needs: pip install faiss-cpu numpy. Not part of the product.
"""
import json
import sys
import time

import faiss
import numpy as np

gallery = np.load(sys.argv[1], mmap_mode="r")
queries = np.ascontiguousarray(np.load(sys.argv[2]), dtype=np.float32)
k = int(sys.argv[3])
index = faiss.IndexFlatIP(gallery.shape[1])
index.add(np.ascontiguousarray(gallery, dtype=np.float32))
index.search(queries[:1], k)  # warm-up
times = []
for q in queries:
    t = time.perf_counter()
    index.search(q.reshape(1, -1), k)
    times.append(time.perf_counter() - t)
times.sort()
pick = lambda p: times[min(len(times) - 1, round(p * (len(times) - 1)))] * 1e3
print(json.dumps({"p50_ms": pick(0.5), "p99_ms": pick(0.99), "threads": faiss.omp_get_max_threads()}))
