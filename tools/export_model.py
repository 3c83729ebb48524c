#!/usr/bin/env python
"""Export a trained detector or segmenter to ONNX with a fixed vocabulary baked in, plus DIR/model.json.
Torchvision-backend checkpoints only.

    python tools/export_model.py --config-file configs/synthetic/vild_r18_fpn_quick.yaml \
        --weights output/quickstart/vild/model_final.pth --vocabulary synthetic --output exported/vild
    python tools/export_model.py --task semseg --config-file configs/synthetic/semseg_r18_fpn_quick.yaml \
        --weights output/quickstart/semseg/ce_pixel_distillation/model_final.pth --vocabulary "star,moon" \
        --output exported/semseg

--vocabulary: a .npy of class embeddings with its sidecar (tools/dump_text_embeddings.py; made by the model's
teacher), "synthetic", "coco", "lvis", "name1,name2,...", a text file of names or a dataset .json, names encoded
by the config's teacher. The checkpoint carries its config: --config-file is optional. The graph runs in a stock onnxruntime (see distill.integrations.onnx_model).
"""

from __future__ import annotations

import argparse
import sys

from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, summary, unit_float

D2_NOT_SUPPORTED = (
    "ONNX export is implemented for the torchvision backend only. The detectron2 backend's models are not "
    "exported: detectron2's TracingAdapter / export path handles its own ROIPooler and fast_rcnn_inference, "
    "not the ViLD RoI heads (text classifier, ensemble) and the fused distill RoI op. Train with "
    "--backend torchvision to deploy with ONNX."
)


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--config-file",
        default=None,
        help="the model's yaml config (default: the one the checkpoint carries)",
    )
    p.add_argument("--weights", required=True, help="checkpoint path or model-zoo name")
    p.add_argument(
        "--vocabulary",
        required=True,
        help='synthetic, coco, lvis, class names "a,b,c", a text file of names, a dataset .json, or a .npy of '
        "class embeddings made by the model's teacher",
    )
    p.add_argument("--output", required=True, help="folder for model.onnx and model.json")
    p.add_argument(
        "--task",
        choices=("detect", "semseg"),
        default="detect",
        help="detect: a detector checkpoint; semseg: a segmenter checkpoint",
    )
    p.add_argument(
        "--no-nms",
        action="store_true",
        help="leave the detections' NMS and top-k out of the graph "
        "(every candidate above the threshold, by decreasing score; the RPN keeps its NMS)",
    )
    p.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch axis (default: batch 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="the canvas (default: INPUT.MAX_SIZE_TEST rounded up to 32, square, which holds every image "
        "the size rule makes; a larger canvas gives the same results)",
    )
    p.add_argument(
        "--score-thresh", type=unit_float, default=None, help="default: MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    )
    p.add_argument(
        "--backend",
        choices=("torchvision", "detectron2"),
        default="torchvision",
        help="the backend that trained the checkpoint",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing export in --output")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.backend == "detectron2":
        raise DistillInputError(D2_NOT_SUPPORTED)
    if args.opset < 16:
        raise DistillInputError(
            f"--opset must be >= 16 (RoiAlign with half-pixel coordinates), got {args.opset}"
        )
    if args.input_size and any(v <= 0 or v % 32 for v in args.input_size):
        raise DistillInputError(f"--input-size must be positive multiples of 32, got {args.input_size}")
    from distill.integrations.backend import check_config_early, check_weights_early

    opts = list(args.opts)
    if args.score_thresh is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh)]
    check_config_early(args.config_file, opts)  # errors that need no model come before torch
    weights = check_weights_early(args.weights)
    from distill.integrations.inference import inference_config
    from distill.integrations.shared import building_with
    from distill.integrations.torchvision.export import export_checkpoint
    from distill.teacher.vocabulary import resolve_vocabulary, training_vocabulary

    kind = "detector" if args.task == "detect" else "segmenter"
    cfg, meta = inference_config(weights, kind, args.config_file, opts, torchvision_only=D2_NOT_SUPPORTED)
    vocab = resolve_vocabulary(args.vocabulary, cfg)
    # built as trained (the training file, else the names the checkpoint records), then set to score `vocab`
    trained = training_vocabulary(cfg, meta) if args.task == "detect" else vocab
    with building_with(trained):
        path = export_checkpoint(
            args.task,
            cfg,
            weights,
            vocab,
            args.output,
            canvas=args.input_size,
            nms=not args.no_nms,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            force=args.force,
        )
    print(f"wrote {path.parent / 'model.onnx'} and {path} ({len(vocab)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
