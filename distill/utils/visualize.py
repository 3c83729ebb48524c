"""Drawing detections with OpenCV: boxes, translucent masks and "name score" labels."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def _color(i: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per class index (golden-ratio hues)."""
    hue = int((i * 0.618033988749895 % 1.0) * 179)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[2]), int(bgr[1]), int(bgr[0])


# the drawing of a 500-px picture: 1-px lines, a 0.35 font; larger pictures get proportionally more of both
_REF_SIDE, _FONT = 500, 0.35


def stroke(height: int, width: int) -> tuple[int, float, int]:
    """Line width, font scale and text thickness for a picture of (height, width) px as drawn: proportional to
    its longer side, so boxes and labels on an 8000x6000 photo are as visible as on a 500-px image."""
    k = max(1.0, max(height, width) / _REF_SIDE)
    return max(1, round(k)), _FONT * k, max(1, round(k / 2))


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float],
    class_names: Sequence[str],
    masks: np.ndarray | None = None,
    novel: Sequence[bool] | None = None,
    scale: int = 1,
) -> np.ndarray:
    """image (H, W, 3) uint8 RGB; boxes (N, 4) XYXY; masks (N, H, W) bool, or N (y0, x0, (h, w) bool) masks
    inside their boxes, or None → a new RGB image, `scale` times larger. Novel classes get a trailing "*"."""
    out = image.astype(np.uint8, copy=True)
    if masks is not None:
        for m, lab in zip(masks, labels):
            y0, x0, m = m if isinstance(m, tuple) else (0, 0, m)
            region = out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]  # a view: blend inside the box only
            region[m] = np.clip(0.55 * region[m] + 0.45 * np.array(_color(lab), np.float32), 0, 255)
    if scale != 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out = np.ascontiguousarray(out)
    lw, font, tt = stroke(*out.shape[:2])
    lw = max(lw, 1 if scale < 3 else 2)
    for b, lab, s in zip(boxes, labels, scores):
        x0, y0, x1, y1 = (int(round(v * scale)) for v in b)
        c = _color(lab)
        cv2.rectangle(out, (x0, y0), (x1, y1), c, lw)
        name = class_names[lab] + ("*" if novel is not None and novel[lab] else "")
        text = f"{name} {s:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, tt)
        pad = max(1, round(th * 0.3))
        cv2.rectangle(out, (x0, max(0, y0 - th - 2 * pad)), (x0 + tw + 2 * pad, y0), c, -1)
        cv2.putText(
            out,
            text,
            (x0 + pad, max(th, y0 - pad)),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (0, 0, 0),
            tt,
            cv2.LINE_AA,
        )
    return out
