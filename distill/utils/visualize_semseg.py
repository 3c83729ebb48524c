"""Drawing semantic segmentations with OpenCV: the image under translucent class colours, and a legend of the
vocabulary (the colours are `visualize`'s, so a class looks the same in detections and segmentations)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .visualize import _color, stroke

_SWATCH, _ROW = 10, 14  # of a 500-px picture; larger pictures get a proportionally larger legend


def semseg_colors(num_classes: int, background: int | None = 0) -> np.ndarray:
    """(num_classes, 3) uint8 RGB; the background (if any) is dark grey."""
    out = np.array([_color(i) for i in range(num_classes)], np.uint8).reshape(-1, 3)
    if background is not None and 0 <= background < num_classes:
        out[background] = (40, 40, 40)
    return out


def render_semseg(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.55,
    scale: int = 1,
    background: int | None = 0,
    ignore_value: int = 255,
    legend_on: bool = True,
    present_only: bool = False,
) -> np.ndarray:
    """Colour a segmentation over its image and add a legend of the vocabulary on the right.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        labels: (H, W) ints indexing `class_names`; `ignore_value` pixels are left uncoloured.
        class_names: the vocabulary (label i is class_names[i]); empty names are left out of the legend.
        background: label drawn dark grey and left uncoloured over the image (None: no background).
        present_only: list only the classes that occur; otherwise all, the absent ones in grey text.
    Returns:
        (H * scale, W * scale + legend width, 3) uint8 RGB.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image_rgb.shape}")
    if labels.shape != image_rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image_rgb.shape[:2]} differ in size")
    n = len(class_names)
    colors = semseg_colors(n, background).astype(np.float32)
    out = np.empty(image_rgb.shape, np.uint8)
    present: set = set()
    for y in range(0, labels.shape[0], 256):  # bands of rows: a photo's float copies would take gigabytes
        lab = np.asarray(labels[y : y + 256]).astype(np.int64)
        present |= set(np.unique(lab).tolist())
        known = (lab >= 0) & (lab < n) & (lab != ignore_value)
        if background is not None:
            known &= lab != background
        band = image_rgb[y : y + 256].astype(np.float32)
        band[known] = (1 - alpha) * band[known] + alpha * colors[lab[known]]
        out[y : y + 256] = np.clip(band, 0, 255).astype(np.uint8)
    if scale != 1:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if not legend_on:
        return np.ascontiguousarray(out)
    return np.concatenate(
        [out, _legend(class_names, colors.astype(np.uint8), present, out.shape[0], present_only)], 1
    )


def render_legend(
    class_names: Sequence[str], present: set, background: int | None = 0, height: int | None = None
) -> np.ndarray:
    """The legend alone, (H, W, 3) uint8 RGB: the vocabulary's colours, the classes not in `present` in grey;
    one column unless `height` (px) is given. For a page that shows it apart from the picture."""
    rows = sum(1 for nm in class_names if nm)
    colors = semseg_colors(len(class_names), background)
    return _legend(class_names, colors, present, height or 8 + _ROW * max(rows, 1), False)


def _legend(
    names: Sequence[str], colors: np.ndarray, present: set, height: int, present_only: bool
) -> np.ndarray:
    items = [(i, nm) for i, nm in enumerate(names) if nm and (i in present or not present_only)]
    lw, font, tt = stroke(height, height)
    k = font / stroke(0, 0)[1]  # the legend grows with the picture's height like the lines and the text
    sw, row, gap, margin = round(_SWATCH * k), round(_ROW * k), round(6 * k), round(8 * k)
    width = (
        margin
        + sw
        + 2 * gap
        + max([cv2.getTextSize(nm, cv2.FONT_HERSHEY_SIMPLEX, font, tt)[0][0] for _, nm in items] or [0])
    )
    rows_per_col = max(1, (height - 4) // row)
    ncol = max(1, -(-len(items) // rows_per_col))
    panel = np.full((max(height, 4 + row * min(len(items), rows_per_col)), width * ncol, 3), 255, np.uint8)
    for j, (i, nm) in enumerate(items):
        x, y = margin + (j // rows_per_col) * width, 4 + (j % rows_per_col) * row
        cv2.rectangle(panel, (x, y), (x + sw, y + sw), tuple(int(c) for c in colors[i]), -1)
        cv2.rectangle(panel, (x, y), (x + sw, y + sw), (0, 0, 0), lw)
        ink = (0, 0, 0) if i in present else (150, 150, 150)
        cv2.putText(
            panel, nm, (x + sw + gap, y + sw - 1), cv2.FONT_HERSHEY_SIMPLEX, font, ink, tt, cv2.LINE_AA
        )
    return panel[:height] if panel.shape[0] > height else panel


def draw_semseg(
    images: Sequence, preds: Sequence, legend: Sequence[str], out_path: str | os.PathLike, scale: int = 3
) -> Path:
    """One picture: the (3, H, W) RGB images side by side under their coloured (H, W) label maps (tensors or
    arrays), and the legend; written atomically (the format from the suffix, default PNG)."""
    from .errors import DistillInputError
    from .io import atomic_write_bytes

    tiles = [
        render_semseg(
            np.asarray(img).transpose(1, 2, 0),
            np.asarray(p),
            legend,
            scale=scale,
            legend_on=k == len(images) - 1,
        )
        for k, (img, p) in enumerate(zip(images, preds))
    ]
    h = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0)), constant_values=255) for t in tiles]
    canvas = np.concatenate(tiles, 1)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(out.suffix or ".png", np.ascontiguousarray(canvas[:, :, ::-1]))
    if not ok:
        raise DistillInputError("cannot encode the picture", out)
    atomic_write_bytes(out, buf.tobytes())
    return out
