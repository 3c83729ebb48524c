"""Run an exported model (DIR/model.onnx + DIR/model.json) with onnxruntime: numpy and OpenCV only, no torch.

from distill.integrations.onnx_model import OnnxModel
model = OnnxModel("exported/")
det = model.detect(rgb)      # (H, W, 3) uint8 → boxes (N, 4) in image pixels, scores, classes, masks (N, H, W)
labels = model.segment(rgb)  # semseg export → (H, W) int64, 0 background, i + 1 model.class_names[i]
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..utils.errors import DistillInputError
from ..utils.io import read_json

FORMAT = "distill.onnx_model/1"
_REQUIRED = ("task", "onnx", "onnx_sha256", "canvas", "size_rule", "class_names", "outputs")


def read_model_json(folder: str | os.PathLike) -> dict:
    """DIR/model.json, checked: format, required keys, class names, canvas, and the graph's sha256."""
    path = Path(folder) / "model.json"
    meta = read_json(path, what="exported model's model.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DistillInputError(f"not an exported distill model (format must be {FORMAT!r})", path)
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise DistillInputError(f"model.json lacks {', '.join(missing)}", path)
    if meta["task"] not in ("detect", "semseg"):
        raise DistillInputError(f"task must be detect or semseg, got {meta['task']!r}", path)
    names = meta["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DistillInputError("class_names must be a non-empty list of strings", path)
    canvas = meta["canvas"]
    if not (
        isinstance(canvas, list) and len(canvas) == 2 and all(isinstance(v, int) and v > 0 for v in canvas)
    ):
        raise DistillInputError(f"canvas must be [height, width], got {canvas!r}", path)
    onnx_path = Path(folder) / str(meta["onnx"])
    if not onnx_path.is_file():
        raise DistillInputError("the ONNX graph named by model.json is missing", onnx_path)
    if hashlib.sha256(onnx_path.read_bytes()).hexdigest() != meta["onnx_sha256"]:
        raise DistillInputError(
            "the ONNX graph does not match the sha256 in model.json (replaced or corrupt)", onnx_path
        )
    return meta


def resized_hw(h: int, w: int, rule: dict, canvas: tuple[int, int]) -> tuple[int, int]:
    """The image's size inside the canvas: the shortest-edge rule of the eager model (its mapper's
    `resized_hw`; a short side of 0 resizes nothing, as there), then shrunk to fit."""
    scale = 1.0
    if rule.get("kind") == "shortest_edge" and rule["short"] > 0:
        scale = rule["short"] / min(h, w)
        if max(h, w) * scale > rule["max"]:
            scale = rule["max"] / max(h, w)
    elif rule.get("kind") == "longest_side" and max(h, w) > rule["max"]:
        scale = rule["max"] / max(h, w)  # the segmenter demo's fit_test_size
    hh, ww = max(1, int(round(h * scale))), max(1, int(round(w * scale)))  # a sliver keeps 1 pixel
    fit = min(1.0, canvas[0] / hh, canvas[1] / ww)
    if fit == 1.0:
        return hh, ww
    return min(canvas[0], max(1, int(hh * fit))), min(canvas[1], max(1, int(ww * fit)))


def paste_masks(masks: np.ndarray, boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, M, M) in-box mask probabilities → (N, h, w), as torchvision's paste_masks_in_image (padding 1)."""
    import cv2

    out = np.zeros((masks.shape[0], h, w), np.float32)
    m = masks.shape[-1]
    scale = (m + 2) / m
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    exp = np.concatenate([centre - half, centre + half], 1).astype(np.int64)
    for k, (mask, (x0, y0, x1, y1)) in enumerate(zip(masks, exp.tolist())):
        bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        big = cv2.resize(np.pad(mask.astype(np.float32), 1), (bw, bh), interpolation=cv2.INTER_LINEAR)
        xa, xb, ya, yb = max(x0, 0), min(x1 + 1, w), max(y0, 0), min(y1 + 1, h)
        if xb > xa and yb > ya:
            out[k, ya:yb, xa:xb] = big[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


class OnnxModel:
    """An exported detector or segmenter on onnxruntime's CPU provider."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DistillInputError(
                "onnxruntime is not installed (pip install 'vlm-distill[deploy]')"
            ) from None
        self.folder = Path(folder)
        self.meta = read_model_json(folder)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.folder / self.meta["onnx"]), opts, providers=["CPUExecutionProvider"]
        )
        got = [o.name for o in self.session.get_outputs()]
        if got != self.meta["outputs"]:
            raise DistillInputError(
                f"the graph's outputs {got} are not model.json's {self.meta['outputs']}",
                self.folder / "model.json",
            )

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """(H, W, 3) uint8 RGB → (1, 3, Hc, Wc) canvas, (1, 2) image size, (sy, sx) resized / original."""
        import cv2

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise DistillInputError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        ch, cw = self.meta["canvas"]
        h0, w0 = rgb.shape[:2]
        h, w = resized_hw(h0, w0, self.meta["size_rule"], (ch, cw))
        if (h, w) == (h0, w0):
            img = rgb.astype(np.float32)
        elif self.meta["size_rule"].get("kind") == "longest_side":  # area on the uint8 image, as the demo
            img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        else:
            img = cv2.resize(rgb.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((1, 3, ch, cw), np.float32)
        canvas[0, :, :h, :w] = img.transpose(2, 0, 1)
        return canvas, np.array([[h, w]], np.int64), (h / h0, w / w0)

    def run(self, images: np.ndarray, image_sizes: np.ndarray) -> dict[str, np.ndarray]:
        """The raw graph: images (B, 3, Hc, Wc) float32, image_sizes (B, 2) int64 → outputs by name."""
        outs = self.session.run(None, {"images": images, "image_sizes": image_sizes})
        return dict(zip(self.meta["outputs"], outs))

    def detect(self, rgb: np.ndarray, paste: bool = True) -> dict[str, np.ndarray]:
        """One image → boxes (N, 4) XYXY in its pixels, scores (N,), classes (N,), masks (N, H, W) probabilities."""
        if self.meta["task"] != "detect":
            raise DistillInputError("this export is a segmenter: use segment()", self.folder / "model.json")
        canvas, sizes, (sy, sx) = self.prepare(rgb)
        out = self.run(canvas, sizes)
        boxes = out["boxes"] / np.array([sx, sy, sx, sy], np.float32)
        det = {"boxes": boxes, "scores": out["scores"], "classes": out["classes"]}
        if out["masks"].ndim == 3 and out["masks"].shape[1] and paste:
            det["masks"] = paste_masks(out["masks"], boxes, *rgb.shape[:2])
        return det

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """One image → (H, W) int64 labels at its size."""
        import cv2

        if self.meta["task"] != "semseg":
            raise DistillInputError("this export is a detector: use detect()", self.folder / "model.json")
        canvas, sizes, _ = self.prepare(rgb)
        h, w = sizes[0].tolist()
        labels = self.run(canvas, sizes)["labels"][0, :h, :w]
        if (h, w) != rgb.shape[:2]:
            labels = cv2.resize(labels.astype(np.int32), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        return labels.astype(np.int64)
