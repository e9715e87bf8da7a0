#!/usr/bin/env python3
"""Python reference of facesearch's `open` face pipeline, for `bench/compare.sh`.

The same models (YuNet 2023mar, SFace 2021dec, the MiniFASNet-design liveness model
from the facesearch model cache) and the same steps as the Rust pipeline: decode,
letterbox to 640 (never enlarged), detect, pick the largest face, similarity-align to
112x112, embed, and (liveness) a 2.7x square crop resized to 128x128, BGR. Written the
way a Python service would: OpenCV for decoding and warping, NumPy for the rest,
onnxruntime with its default threading. It is a baseline for timing, not part of the
product.

Usage: reference_pipeline.py [--iterations N] [--models DIR] PHOTO...
Prints JSON: per photo the median ms of decode+detect+align+embed and of liveness,
and the throughput of decode+detect+align+embed over all photos (enrolment-like).
Needs: pip install onnxruntime numpy opencv-python-headless
"""
import argparse
import json
import os
import statistics
import time

import cv2
import numpy as np
import onnxruntime as ort

INPUT = 640
REFERENCE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


class Pipeline:
    def __init__(self, models):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        load = lambda name: ort.InferenceSession(os.path.join(models, name), opts, providers=["CPUExecutionProvider"])
        self.det = load("face_detection_yunet_2023mar.onnx")
        self.emb = load("face_recognition_sface_2021dec.onnx")
        self.live = load("fr_liveness.onnx")
        self.det_in = self.det.get_inputs()[0].name
        self.det_out = [o.name for o in self.det.get_outputs()]
        self.emb_in = self.emb.get_inputs()[0].name
        self.live_in = self.live.get_inputs()[0].name

    def detect(self, bgr):
        h, w = bgr.shape[:2]
        scale = min(INPUT / max(w, h), 1.0)
        iw, ih = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((INPUT, INPUT, 3), np.float32)
        canvas[:ih, :iw] = cv2.resize(bgr, (iw, ih), interpolation=cv2.INTER_LINEAR) if scale < 1 else bgr
        blob = canvas.transpose(2, 0, 1)[None]
        out = dict(zip(self.det_out, self.det.run(self.det_out, {self.det_in: blob})))
        boxes, scores, marks = [], [], []
        for stride in (8, 16, 32):
            cols = INPUT // stride
            cls = out[f"cls_{stride}"].reshape(-1)
            obj = out[f"obj_{stride}"].reshape(-1)
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.nonzero(score >= 0.6)[0]
            if keep.size == 0:
                continue
            col, row = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            b = out[f"bbox_{stride}"].reshape(-1, 4)[keep]
            k = out[f"kps_{stride}"].reshape(-1, 10)[keep]
            cx, cy = (col + b[:, 0]) * stride, (row + b[:, 1]) * stride
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1))
            scores.append(score[keep])
            kx = (col[:, None] + k[:, 0::2]) * stride
            ky = (row[:, None] + k[:, 1::2]) * stride
            marks.append(np.stack([kx, ky], 2))
        if not boxes:
            return None
        boxes, scores, marks = np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks)
        kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.6, 0.4)
        kept = np.array(kept).reshape(-1)
        best = max(kept, key=lambda i: boxes[i, 2] * boxes[i, 3])
        return boxes[best] / scale, marks[best] / scale

    @staticmethod
    def similarity(src, dst):
        # Umeyama: least-squares rotation + uniform scale + translation, no reflection.
        mu_s, mu_d = src.mean(0), dst.mean(0)
        s, d = src - mu_s, dst - mu_d
        cov = d.T @ s / len(src)
        u, sig, vt = np.linalg.svd(cov)
        sign = np.eye(2)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[1, 1] = -1
        r = u @ sign @ vt
        c = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
        t = mu_d - c * r @ mu_s
        return np.hstack([c * r, t[:, None]])

    def embed(self, bgr, marks):
        m = self.similarity(marks.astype(np.float64), REFERENCE)
        face = cv2.warpAffine(bgr, m, (112, 112), flags=cv2.INTER_LINEAR)
        blob = cv2.cvtColor(face, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)[None]
        v = self.emb.run(None, {self.emb_in: blob})[0].reshape(-1)
        return v / np.linalg.norm(v)

    def liveness(self, bgr, box):
        h, w = bgr.shape[:2]
        side = min(max(box[2], box[3]) * 2.7, min(w, h))
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        x = int(np.clip(cx - side / 2, 0, w - side))
        y = int(np.clip(cy - side / 2, 0, h - side))
        crop = cv2.resize(bgr[y : y + int(side), x : x + int(side)], (128, 128), interpolation=cv2.INTER_LINEAR)
        logits = self.live.run(None, {self.live_in: crop.astype(np.float32).transpose(2, 0, 1)[None]})[0].reshape(-1)
        e = np.exp(logits - logits.max())
        return float(e[0] / e.sum())

    def identify(self, data):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        found = self.detect(bgr)
        if found is None:
            return bgr, None, None
        box, marks = found
        return bgr, box, self.embed(bgr, marks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--models", default=os.environ.get("FACESEARCH_MODELS_DIR", os.path.expanduser("~/.cache/facesearch/models")))
    ap.add_argument("photos", nargs="+")
    args = ap.parse_args()
    p = Pipeline(args.models)
    photos = [(path, open(path, "rb").read()) for path in args.photos]
    report = {"onnxruntime": ort.__version__, "opencv": cv2.__version__, "photos": []}
    for path, data in photos:
        p.identify(data)  # warm-up
        ident, live = [], []
        for _ in range(args.iterations):
            t = time.perf_counter()
            bgr, box, v = p.identify(data)
            ident.append(time.perf_counter() - t)
            if box is not None:
                t = time.perf_counter()
                p.liveness(bgr, box)
                live.append(time.perf_counter() - t)
        report["photos"].append({
            "path": path,
            "face": box is not None,
            "detect_embed_ms": statistics.median(ident) * 1e3,
            "liveness_ms": statistics.median(live) * 1e3 if live else None,
        })
    t = time.perf_counter()
    n = 0
    for _ in range(max(1, args.iterations // 4)):
        for _, data in photos:
            p.identify(data)
            n += 1
    report["enrol_images_per_s"] = n / (time.perf_counter() - t)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
