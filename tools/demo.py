#!/usr/bin/env python
"""Detect any vocabulary in images: drawn boxes, masks and labels, plus a COCO-format json.

    python tools/demo.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml \
        --weights output/quickstart/vild/model_final.pth --input IMG_OR_DIR --output OUT \
        [--vocabulary synthetic|coco|lvis|NAMES|FILE] [--custom-vocabulary NAMES|FILE] [KEY VALUE ...]

`--task semseg` segments instead, with a segmenter checkpoint of the torchvision backend (the config gives the
teacher that encodes the vocabulary): per image OUT/<name>.png (coloured segmentation with a legend) and
OUT/<name>_labels.png (0 background, i + 1 the i-th vocabulary class):

    python tools/demo.py --task semseg --config-file configs/synthetic/semseg_r18_fpn_quick.yaml \
        --weights output/quickstart/semseg/ce_pixel_distillation/model_final.pth --input IMG_OR_DIR --output OUT

`--zero-shot` detects with the teacher alone, no detector trained (ViLD's "CLIP on cropped regions"): class-agnostic
proposals (training-free selective search, or `--proposals rpn --weights W`: a trained detector's RPN) scored by
the teacher's crops against the vocabulary; the same outputs:

    python tools/demo.py --zero-shot --teacher ViT-B-32 --pretrained openai --vocabulary custom \
        --custom-vocabulary "cat,dog,bicycle" --input IMG_OR_DIR --output OUT

A vocabulary is given as the tools all take one: a named set, class names "a,b,c", a text file of names (one a
line or comma separated), a dataset .json (its categories) or a .npy of class embeddings with its .json sidecar
(made by the model's teacher). Names are encoded by the config's teacher (MODEL.DISTILL.TEACHER) on the fly and
cached under $DISTILL_CACHE/text_embeddings. The checkpoint carries its config: --config-file is optional. "lvis" reads the class names from $DISTILL_DATASETS/lvis/lvis_v1_val.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distill.integrations.backend import AUTO_WITH_CHECKPOINT
from distill.utils import DistillInputError, atomic_write_bytes, cli_entry
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

SEMSEG_ONLY = (
    "--task semseg runs torchvision-backend segmenters only (the quickstart's semseg stage makes one)"
)


def semseg_main(args, images: list[Path], out: Path) -> int:
    """--task semseg: one drawn picture and one label PNG (8-bit, 16-bit past 255 classes) per image."""
    import cv2
    import numpy as np
    import torch

    from distill.data.images import read_image_rgb
    from distill.integrations.inference import inference_config
    from distill.integrations.torchvision.sem_seg import fit_test_size, segment_images
    from distill.model_zoo import resolve_weights
    from distill.teacher.domain import check_images, training_world
    from distill.teacher.vocabulary import resolve_vocabulary
    from distill.utils.visualize_semseg import draw_semseg

    weights = resolve_weights(args.weights)
    cfg, _ = inference_config(weights, "segmenter", args.config_file, args.opts, torchvision_only=SEMSEG_ONLY)
    spec, flag = vocabulary_spec(args)
    vocab = resolve_vocabulary(spec, cfg, flag)
    if len(vocab) >= 1 << 16:
        raise DistillInputError(f"{len(vocab)} classes do not fit a 16-bit label map (at most 65535)")
    t = cfg.MODEL.DISTILL.TEACHER
    check_images(training_world(t.ARCH, t.PRETRAINED or None), images)  # synthetic-only teacher on photos
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
    # the given config's test-time augmentation, not the one saved in the checkpoint
    flip = bool(cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP)
    preds, legend = segment_images(weights, rgb, vocab, flip_test=flip) if rgb else ([], [])
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
    p.add_argument(
        "--weights", default=None, help="checkpoint path or model-zoo name (with --zero-shot: the RPN's)"
    )
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for drawn images and predictions.json")
    p.add_argument(
        "--vocabulary",
        default=None,
        metavar="VOCABULARY",
        help='the classes to look for: synthetic, coco, lvis, class names "a,b,c", a text file of names, a '
        "dataset .json or a .npy of class embeddings (default: synthetic)",
    )
    p.add_argument(
        "--custom-vocabulary",
        default=None,
        metavar="NAMES",
        help='class names "star,moon,cloud", a text file of names or a .npy of class embeddings '
        "(implies --vocabulary custom)",
    )
    p.add_argument(
        "--score-thresh", type=unit_float, default=0.3, help="draw detections scoring at least this"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torchvision", "detectron2"),
        default="auto",
        help=AUTO_WITH_CHECKPOINT,
    )
    z = p.add_argument_group("zero-shot detection by the teacher alone (no trained detector)")
    z.add_argument("--zero-shot", action="store_true", help="the teacher scores class-agnostic proposals")
    z.add_argument("--teacher", default=None, help="open_clip arch or model-zoo teacher (default: tiny one)")
    z.add_argument("--pretrained", default=None, help="open_clip pretrained tag or checkpoint of --teacher")
    z.add_argument(
        "--proposals",
        choices=("selective-search", "rpn"),
        default="selective-search",
        help="selective-search: training-free; rpn: the RPN of the detector --weights",
    )
    z.add_argument(
        "--objectness-weight",
        type=unit_float,
        default=None,
        help="score = p^(1-a) * objectness^a (default 0.5 with rpn, 0 with selective-search)",
    )
    add_overrides(p)
    return p


def zero_shot_main(args, images: list[Path], out: Path) -> int:
    """--zero-shot: the teacher alone on proposals; drawn images and predictions.json as for a detector."""
    from distill.integrations.demo_outputs import write_demo_outputs
    from distill.integrations.zero_shot import ZeroShotSpec, build_zero_shot
    from distill.model_zoo import resolve_weights
    from distill.teacher.domain import check_images
    from distill.teacher.vocabulary import vocabulary_names

    names, _ = vocabulary_names(*vocabulary_spec(args))
    spec = ZeroShotSpec(
        names=names,
        teacher=args.teacher,
        pretrained=args.pretrained,
        proposals=args.proposals,
        weights=resolve_weights(args.weights) if args.weights else None,
        config_file=args.config_file,
        opts=list(args.opts),
        backend=args.backend,
        objectness_weight=args.objectness_weight,
    )
    detector = build_zero_shot(spec)
    check_images(detector.teacher.world, images)  # a synthetic-only teacher on photos: say so once
    note = "zero-shot: the teacher on proposals; tools/evaluate.py --predictions reads it"
    return write_demo_outputs(
        lambda record, image: detector(image), names, images, out, args.score_thresh, note
    ).report(len(images))


def check_args(args) -> None:
    if args.custom_vocabulary is not None and args.vocabulary not in (None, "custom"):
        raise DistillInputError(
            f"--custom-vocabulary needs --vocabulary custom (got --vocabulary {args.vocabulary})"
        )
    args.vocabulary = args.vocabulary or ("custom" if args.custom_vocabulary is not None else "synthetic")
    if args.zero_shot:
        if args.task != "detect":
            raise DistillInputError("--zero-shot detects; it does not segment (--task semseg)")
        if (args.proposals == "rpn") != (args.weights is not None):
            raise DistillInputError(
                "--zero-shot --proposals rpn needs --weights (a detector's checkpoint); "
                "selective-search takes none"
            )
    elif args.weights is None:
        raise DistillInputError("--weights is required (a detector checkpoint), unless --zero-shot")
    elif args.teacher or args.pretrained or args.objectness_weight is not None:
        raise DistillInputError("--teacher, --pretrained and --objectness-weight go with --zero-shot")


def vocabulary_spec(args) -> tuple[str, str]:
    """(the vocabulary as given, the flag that gave it) for distill.teacher.vocabulary.resolve_vocabulary."""
    if args.vocabulary == "custom":
        return args.custom_vocabulary or "", "--custom-vocabulary"
    return args.vocabulary, "--vocabulary"


def check_early(args) -> None:
    """Errors that need no model, before torch is imported: the weights, the config (file, keys, values) and
    the class embeddings file it names."""
    from distill.integrations.backend import check_config_early, check_weights_early

    if args.weights:  # --zero-shot on selective search takes none
        check_weights_early(args.weights)
    if not args.config_file:
        return  # the checkpoint's own config: reading it takes torch
    backend = "torchvision" if args.task == "semseg" else args.backend
    cfg = check_config_early(args.config_file, args.opts, backend)
    emb = cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS if cfg is not None else ""
    if emb and not os.path.isfile(emb):
        raise DistillInputError("MODEL.DISTILL.TEST_CLASS_EMBEDDINGS: class embeddings file not found", emb)


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
    check_early(args)
    ensure_dir(out, "--output folder")
    if args.zero_shot:
        return zero_shot_main(args, images, out)
    if args.task == "semseg":
        return semseg_main(args, images, out)
    from distill.integrations.backend import backend_name_for, get_backend
    from distill.integrations.demo_outputs import write_demo_outputs
    from distill.integrations.inference import inference_config
    from distill.model_zoo import resolve_weights
    from distill.teacher.domain import check_images, training_world
    from distill.teacher.vocabulary import resolve_vocabulary

    weights = resolve_weights(args.weights)
    if not Path(weights).is_file():
        raise DistillInputError("weights not found", weights)
    backend = get_backend(backend_name_for(args.backend, weights))
    cfg, _ = inference_config(weights, "detector", args.config_file, args.opts, backend.load_config)
    spec, flag = vocabulary_spec(args)
    vocab = resolve_vocabulary(spec, cfg, flag)
    names = vocab.class_names
    t = cfg.MODEL.DISTILL.TEACHER
    check_images(training_world(t.ARCH, t.PRETRAINED or None), images)  # synthetic-only teacher on photos
    model = backend.load_for_inference(cfg, weights, vocab)

    note = "tools/evaluate.py --predictions reads it, matching images by file name"
    detect = lambda record, image: backend.predict(model, cfg, record)  # noqa: E731
    return write_demo_outputs(detect, names, images, out, args.score_thresh, note).report(len(images))


if __name__ == "__main__":
    sys.exit(main())
