"""The detection demo's outputs, whatever detects: OUT/<name>.png drawn and OUT/predictions.json (COCO dataset
style, category i + 1 = names[i], images by file name, which tools/evaluate.py matches)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..utils.errors import DistillInputError


def write_demo_outputs(
    detect: Callable[[dict, torch.Tensor], dict],
    names: list[str],
    images: list[Path],
    out: Path,
    score_thresh: float,
    note: str,
):
    """`detect(record, image)` on each readable (3, H, W) uint8 image (record: its dataset-style dict, file_name,
    height, width, image_id) → detections (boxes, scores, labels [, masks]) in its pixels; draws them and writes predictions.json; `note` ends the last line. Returns the
    SkipList of unreadable images."""
    import cv2
    import numpy as np

    from ..data.images import read_image_rgb
    from ..utils.cli import SkipList, output_names
    from ..utils.io import atomic_write_bytes, atomic_write_json
    from .drawing import render
    from .torchvision.meta_arch import detections_to_coco

    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    skipped = SkipList()
    for k, (path, drawn_path) in enumerate(zip(images, output_names(images, out)), 1):
        try:
            image = read_image_rgb(str(path))  # a truncated file is skipped like an unreadable one
        except DistillInputError as e:
            skipped.add(path, str(e))
            continue
        h, w = image.shape[1:]
        det = detect({"file_name": str(path), "height": h, "width": w, "image_id": k}, image)
        rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        drawn = render(rgb, det, names, None, score_thresh, scale=max(1, 384 // max(h, w)))
        ok, buf = cv2.imencode(".png", drawn[:, :, ::-1])
        if not ok:
            raise DistillInputError("cannot encode the drawn picture", drawn_path)
        atomic_write_bytes(drawn_path, buf.tobytes())
        coco["images"].append({"id": k, "file_name": str(path), "height": h, "width": w})
        coco["annotations"] += detections_to_coco(det, k, list(range(1, len(names) + 1)))
        kept = int((det["scores"] >= score_thresh).sum())
        print(f"{path}: {kept} detection(s) with score >= {score_thresh}")
    for i, a in enumerate(coco["annotations"], 1):
        a["id"] = i
    atomic_write_json(out / "predictions.json", coco)
    print(f"wrote {len(coco['images'])} drawn image(s) and predictions.json to {out} ({note})")
    return skipped
