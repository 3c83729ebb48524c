#!/usr/bin/env python
"""Detect any vocabulary in images: drawn boxes, masks and labels, plus a COCO-format json.

    python tools/demo.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml \
        --weights output/quickstart/vild/model_final.pth --input IMG_OR_DIR --output OUT \
        [--vocabulary synthetic|coco|lvis|custom] [--custom-vocabulary "star,moon,cloud"] [KEY VALUE ...]

`--task semseg` segments instead, with a segmenter checkpoint of the torchvision backend (the config gives the
teacher that encodes the vocabulary): per image OUT/<name>.png (coloured segmentation with a legend) and
OUT/<name>_labels.png (0 background, i + 1 the i-th vocabulary class):

    python tools/demo.py --task semseg --config-file configs/synthetic/semseg_r18_fpn_quick.yaml \
        --weights output/quickstart/semseg/ce_pixel_distillation/model_final.pth --input IMG_OR_DIR --output OUT

A custom vocabulary is encoded by the config's teacher (MODEL.DISTILL.TEACHER) on the fly and cached under
$DISTILL_CACHE/text_embeddings. "lvis" reads the class names from $DISTILL_DATASETS/lvis/lvis_v1_val.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from distill.data.images import list_images, read_image_rgb
from distill.teacher.vocabulary import NAMED, named_vocabulary, vocabulary_embeddings
from distill.utils import DistillInputError, atomic_write_bytes, atomic_write_json, cli_entry


def semseg_main(args) -> int:
    """--task semseg: one drawn picture and one label PNG per image."""
    from distill.config import load_config
    from distill.integrations.torchvision.sem_seg import segment_images
    from distill.model_zoo import resolve_weights
    from distill.teacher import create_teacher
    from distill.utils.visualize_semseg import draw_semseg

    images = list_images(args.input)
    cfg = load_config(args.config_file, args.opts)
    names = named_vocabulary(args.vocabulary, args.custom_vocabulary)
    weights = resolve_weights(args.weights)
    t = cfg.MODEL.DISTILL.TEACHER
    teacher = create_teacher(t.ARCH, t.PRETRAINED or None)
    rgb = [read_image_rgb(str(p)) for p in images]
    preds, legend = segment_images(weights, rgb, names, teacher, t.TEMPLATES)
    out = Path(args.output)
    for path, img, pred in zip(images, rgb, preds):
        draw_semseg([img], [pred], legend, out / f"{path.stem}.png", scale=max(1, 384 // max(img.shape[1:])))
        ok, buf = cv2.imencode(".png", pred.numpy().astype(np.uint8 if len(legend) <= 256 else np.uint16))
        if not ok:
            raise DistillInputError("cannot encode the label map", out / f"{path.stem}_labels.png")
        atomic_write_bytes(out / f"{path.stem}_labels.png", buf.tobytes())
        found = [legend[v] for v in pred.unique().tolist() if v > 0]
        print(f"{path}: {', '.join(found) or 'background only'}")
    print(f"wrote {len(images)} segmentation picture(s) and label map(s) to {out}")
    return 0


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--task", choices=("detect", "semseg"), default="detect",
                   help="semseg: a segmenter checkpoint (torchvision backend), coloured segmentation + legend")
    p.add_argument("--weights", required=True, help="checkpoint path or model-zoo name")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for drawn images and predictions.json")
    p.add_argument("--vocabulary", choices=NAMED, default="synthetic")
    p.add_argument("--custom-vocabulary", default=None)
    p.add_argument("--score-thresh", type=float, default=0.3)
    p.add_argument("--backend", choices=("auto", "torchvision", "detectron2"), default="auto",
                   help="auto: detectron2 when installed")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.task == "semseg":
        return semseg_main(args)
    from distill.config import load_config
    from distill.integrations.backend import get_backend
    from distill.integrations.drawing import render
    from distill.integrations.torchvision.meta_arch import detections_to_coco
    from distill.model_zoo import resolve_weights

    backend = get_backend(args.backend)
    images = list_images(args.input)
    cfg = load_config(args.config_file, args.opts)
    names = named_vocabulary(args.vocabulary, args.custom_vocabulary)
    t = cfg.MODEL.DISTILL.TEACHER
    vocab = vocabulary_embeddings(names, t.ARCH, t.PRETRAINED, t.TEMPLATES, cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS)
    weights = resolve_weights(args.weights)
    if not Path(weights).is_file():
        raise DistillInputError("weights not found", weights)
    model = backend.load_for_inference(cfg, weights, vocab)
    out = Path(args.output)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    for k, path in enumerate(images, 1):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DistillInputError("cannot decode image", path)
        h, w = bgr.shape[:2]
        det = backend.predict(model, cfg, {"file_name": str(path), "height": h, "width": w, "image_id": k})
        drawn = render(np.ascontiguousarray(bgr[:, :, ::-1]), det, names, None, args.score_thresh,
                               scale=max(1, 384 // max(h, w)))
        ok, buf = cv2.imencode(".png", drawn[:, :, ::-1])
        atomic_write_bytes(out / f"{path.stem}.png", buf.tobytes())
        coco["images"].append({"id": k, "file_name": str(path), "height": h, "width": w})
        coco["annotations"] += detections_to_coco(det, k, list(range(1, len(names) + 1)))
        kept = int((det["scores"] >= args.score_thresh).sum())
        print(f"{path}: {kept} detection(s) with score >= {args.score_thresh}")
    for i, a in enumerate(coco["annotations"], 1):
        a["id"] = i
    atomic_write_json(out / "predictions.json", coco)
    print(f"wrote {len(images)} drawn image(s) and predictions.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
