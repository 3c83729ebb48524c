#!/usr/bin/env python
"""A web page for trying the models: upload an image, type a vocabulary, see boxes, masks and a table of
detections; a second tab segments the image (needs the optional extra: pip install -e '.[demo]').

    python tools/web_demo.py                     # the quickstart's models (make quickstart first)
    python tools/web_demo.py --config-file C --weights W [--semseg-config C2 --semseg-weights W2] [KEY VALUE ...]

Then open http://127.0.0.1:7860. Defaults: configs/synthetic/vild_r18_fpn_quick.yaml with
output/quickstart/vild/model_final.pth, and configs/synthetic/semseg_r18_fpn_quick.yaml with
output/quickstart/semseg/ce_pixel_distillation/model_final.pth. Any torchvision-backend checkpoint works with
its config; --semseg-weights "" leaves the segmentation tab out of use. KEY VALUE overrides apply to the
detector's config. The Detection tab's "method" also offers the teacher alone on class-agnostic proposals
(zero-shot, ViLD's "CLIP on cropped regions"); --weights "" serves only that, with the config's teacher, e.g.

    python tools/web_demo.py --weights "" MODEL.DISTILL.TEACHER.ARCH ViT-B-32 MODEL.DISTILL.TEACHER.PRETRAINED openai
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, port_number, summary

QUICKSTART = {
    "config": "synthetic/vild_r18_fpn_quick.yaml",
    "weights": Path("output/quickstart/vild/model_final.pth"),
    "semseg_config": "synthetic/semseg_r18_fpn_quick.yaml",
    "semseg_weights": Path("output/quickstart/semseg/ce_pixel_distillation/model_final.pth"),
}


@cli_entry
def main(argv=None) -> int:
    from distill.model_zoo import get_config_file

    d = {
        **QUICKSTART,
        "config": get_config_file(QUICKSTART["config"]),
        "semseg_config": get_config_file(QUICKSTART["semseg_config"]),
    }
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--config-file", default=str(d["config"]), help="the detector's yaml config")
    p.add_argument(
        "--weights", default=str(d["weights"]), help="detector checkpoint ('' for none: zero-shot only)"
    )
    p.add_argument("--semseg-config", default=str(d["semseg_config"]), help="the segmenter's yaml config")
    p.add_argument(
        "--semseg-weights", default=str(d["semseg_weights"]), help="segmenter checkpoint ('' for none)"
    )
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    p.add_argument("--port", type=port_number, default=7860, help="port to serve on")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the detector's config")
    args = p.parse_args(argv)
    if args.weights and not os.path.isfile(args.weights):
        raise DistillInputError(
            "detector weights not found: run `make quickstart` first or pass --weights", args.weights
        )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise DistillInputError("the web demo needs Gradio: pip install -e '.[demo]'") from None
    from distill.config import load_config
    from distill.integrations.web_demo import DemoModels, build_app, launch

    det_cfg = load_config(args.config_file, args.opts)
    seg_cfg = load_config(args.semseg_config) if args.semseg_weights else None
    models = DemoModels(det_cfg, args.weights, seg_cfg, args.semseg_weights or None)
    if args.weights:
        models.detector()  # a checkpoint that does not fit the config fails here, before the page opens
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)")
    launch(build_app(models), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
