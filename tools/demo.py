#!/usr/bin/env python
"""Detect any vocabulary in images: drawn boxes, masks and labels, plus a COCO-format json.

    python tools/demo.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml \
        --weights output/quickstart/vild/model_final.pth --input IMG_OR_DIR --output OUT \
        [--vocabulary test|synthetic|coco|lvis|custom] [--custom-vocabulary "star,moon,cloud"] [KEY VALUE ...]

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
import os
import sys
from pathlib import Path

from distill.utils import DistillInputError, atomic_write_bytes, atomic_write_json, cli_entry
from distill.utils.cli import (
    SkipList,
    ToolParser,
    add_overrides,
    list_images,
    output_names,
    parse_args,
    summary,
    unit_float,
)
from distill.utils.io import ensure_dir, same_file


def semseg_main(args, images: list[Path], out: Path) -> int:
    """--task semseg: one drawn picture and one label PNG (8-bit, 16-bit past 255 classes) per image."""
    import cv2
    import numpy as np
    import torch

    from distill.config import load_config
    from distill.data.images import read_image_rgb
    from distill.integrations.torchvision.sem_seg import segment_images
    from distill.model_zoo import resolve_weights
    from distill.teacher import create_teacher
    from distill.teacher.vocabulary import named_vocabulary
    from distill.utils.visualize_semseg import draw_semseg

    weights = resolve_weights(args.weights)
    cfg = load_config(args.config_file or saved_config(weights, "segmenter"), args.opts)
    names = named_vocabulary(args.vocabulary, args.custom_vocabulary)
    if len(names) >= 1 << 16:
        raise DistillInputError(f"{len(names)} classes do not fit a 16-bit label map (at most 65535)")
    t = cfg.MODEL.DISTILL.TEACHER
    teacher = create_teacher(t.ARCH, t.PRETRAINED or None)
    skipped = SkipList()
    pictures = output_names(images, out)
    labels = output_names(images, out, "_labels.png")
    good, rgb = [], []
    for k, path in enumerate(images):
        try:
            rgb.append(fit_test_size(read_image_rgb(str(path)), cfg.INPUT.MAX_SIZE_TEST))
            good.append(k)
        except DistillInputError as e:
            skipped.add(path, str(e))
    preds, legend = segment_images(weights, rgb, names, teacher, t.TEMPLATES) if rgb else ([], [])
    for k, img, pred in zip(good, rgb, preds):
        path, pic, lab = images[k], pictures[k], labels[k]
        img = read_image_rgb(str(path))  # drawn and labelled at full size, predicted at most MAX_SIZE_TEST
        pred = torch.from_numpy(
            cv2.resize(
                pred.numpy().astype(np.uint16), (img.shape[2], img.shape[1]), interpolation=cv2.INTER_NEAREST
            ).astype(np.int32)
        )
        draw_semseg([img], [pred], legend, pic, scale=max(1, 384 // max(img.shape[1:])))
        ok, buf = cv2.imencode(".png", pred.numpy().astype(np.uint8 if len(legend) <= 256 else np.uint16))
        if not ok:
            raise DistillInputError("cannot encode the label map", lab)
        atomic_write_bytes(lab, buf.tobytes())
        found = [legend[v] for v in pred.unique().tolist() if v > 0]
        print(f"{path}: {', '.join(found) or 'background only'}")
    print(f"wrote {len(images) - len(skipped.items)} segmentation picture(s) and label map(s) to {out}")
    return skipped.report(len(images))


def saved_config(weights: str, what: str) -> str:
    """The resolved config a checkpoint carries, as a yaml file to load (tools/train_net.py writes it)."""
    import atexit
    import tempfile

    from distill.utils.checkpoint import META_KEY, load_torch_file

    ckpt = load_torch_file(weights, f"{what} checkpoint")
    text = ckpt.get(META_KEY, {}).get("config") or ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(text, str):
        raise DistillInputError(
            f"this {what} checkpoint carries no config (an older one); pass --config-file", weights
        )
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    atexit.register(os.unlink, path)
    return path


def fit_test_size(img, max_size: int):
    """A (3, H, W) uint8 image larger than INPUT.MAX_SIZE_TEST shrunk to it (a photo segmented at full size
    takes gigabytes); smaller images are left as they are."""
    import cv2
    import torch

    h, w = img.shape[1:]
    if max(h, w) <= max_size:
        return img
    s = max_size / max(h, w)
    small = cv2.resize(
        img.permute(1, 2, 0).numpy(),
        (max(1, round(w * s)), max(1, round(h * s))),
        interpolation=cv2.INTER_AREA,
    )
    return torch.from_numpy(small).permute(2, 0, 1).contiguous()


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--config-file",
        default=None,
        help="the model's yaml (teacher, input sizes, architecture); default: the checkpoint's own",
    )
    p.add_argument(
        "--task",
        choices=("detect", "semseg"),
        default="detect",
        help="semseg: a segmenter checkpoint (torchvision backend), coloured segmentation + legend",
    )
    p.add_argument("--weights", required=True, help="checkpoint path or model-zoo name")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for drawn images and predictions.json")
    p.add_argument(
        "--vocabulary",
        choices=("synthetic", "coco", "lvis", "custom"),
        default=None,
        help="class names to detect (default: synthetic, or custom with --custom-vocabulary)",
    )
    p.add_argument(
        "--custom-vocabulary",
        default=None,
        metavar="NAMES",
        help='comma-separated class names, e.g. "star,moon,cloud" (implies --vocabulary custom)',
    )
    p.add_argument(
        "--score-thresh", type=unit_float, default=0.3, help="draw detections scoring at least this"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torchvision", "detectron2"),
        default="auto",
        help="auto: detectron2 when installed",
    )
    add_overrides(p)
    return p


def check_args(args) -> None:
    if args.custom_vocabulary is not None and args.vocabulary not in (None, "custom"):
        raise DistillInputError(
            f"--custom-vocabulary needs --vocabulary custom (got --vocabulary {args.vocabulary})"
        )
    args.vocabulary = args.vocabulary or ("custom" if args.custom_vocabulary is not None else "synthetic")


@cli_entry
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    check_args(args)
    images = list_images(args.input)
    out = Path(args.output)
    if Path(args.input).is_dir() and same_file(out, args.input):
        raise DistillInputError(
            "--output is the --input folder: the drawn pictures would land among the inputs; "
            "choose another folder",
            out,
        )
    ensure_dir(out, "--output folder")
    if args.task == "semseg":
        return semseg_main(args, images, out)
    import cv2
    import numpy as np

    from distill.data.images import read_image_rgb
    from distill.integrations.backend import backend_name_for, get_backend
    from distill.integrations.drawing import render
    from distill.integrations.torchvision.meta_arch import detections_to_coco
    from distill.model_zoo import resolve_weights
    from distill.teacher.vocabulary import named_vocabulary, vocabulary_embeddings

    weights = resolve_weights(args.weights)
    if not Path(weights).is_file():
        raise DistillInputError("weights not found", weights)
    backend = get_backend(backend_name_for(args.backend, weights))
    drawn_paths = output_names(images, out)
    cfg = backend.load_config(args.config_file or saved_config(weights, "detector"), args.opts)
    names = named_vocabulary(args.vocabulary, args.custom_vocabulary)
    t = cfg.MODEL.DISTILL.TEACHER
    vocab = vocabulary_embeddings(
        names, t.ARCH, t.PRETRAINED, t.TEMPLATES, cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS
    )
    model = backend.load_for_inference(cfg, weights, vocab)
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    skipped = SkipList()
    for k, (path, drawn_path) in enumerate(zip(images, drawn_paths), 1):
        try:
            # (H, W, 3) RGB; a truncated file is skipped like an unreadable one
            rgb = np.ascontiguousarray(read_image_rgb(str(path)).permute(1, 2, 0).numpy())
        except DistillInputError as e:
            skipped.add(path, str(e))
            continue
        h, w = rgb.shape[:2]
        det = backend.predict(model, cfg, {"file_name": str(path), "height": h, "width": w, "image_id": k})
        drawn = render(
            rgb,
            det,
            names,
            None,
            args.score_thresh,
            scale=max(1, 384 // max(h, w)),
        )
        del rgb
        ok, buf = cv2.imencode(".png", drawn[:, :, ::-1])
        atomic_write_bytes(drawn_path, buf.tobytes())
        coco["images"].append({"id": k, "file_name": str(path), "height": h, "width": w})
        coco["annotations"] += detections_to_coco(det, k, list(range(1, len(names) + 1)))
        kept = int((det["scores"] >= args.score_thresh).sum())
        print(f"{path}: {kept} detection(s) with score >= {args.score_thresh}")
    for i, a in enumerate(coco["annotations"], 1):
        a["id"] = i
    atomic_write_json(out / "predictions.json", coco)
    print(
        f"wrote {len(coco['images'])} drawn image(s) and predictions.json to {out} "
        "(tools/evaluate.py --predictions reads it, matching images by file name)"
    )
    return skipped.report(len(images))


if __name__ == "__main__":
    sys.exit(main())
