#!/usr/bin/env python
"""A web page for trying the models: upload an image, type a vocabulary, see boxes, masks and a table of
detections; a second tab segments the image (needs the optional extra: pip install -e '.[demo]').
Torchvision-backend checkpoints only (tools/demo.py runs detectron2 detectors).

    python tools/web_demo.py                     # the quickstart's models (make quickstart first)
    python tools/web_demo.py --weights W [--semseg-weights W2] [--config-file C] [KEY VALUE ...]

Then open http://127.0.0.1:7860. Defaults: output/quickstart/vild/model_final.pth and
output/quickstart/semseg/ce_pixel_distillation/model_final.pth. Any torchvision-backend checkpoint works alone
(it carries its config; --config-file / --semseg-config replace it); --semseg-weights "" leaves the
segmentation tab out of use. KEY VALUE overrides apply to the detector's config. The Detection tab's "method"
also offers the teacher alone on class-agnostic proposals (zero-shot, ViLD's "CLIP on cropped regions");
--weights "" serves only that, with the teacher of --config-file (default: the quickstart's), e.g.

    python tools/web_demo.py --weights "" MODEL.DISTILL.TEACHER.ARCH ViT-B-32 MODEL.DISTILL.TEACHER.PRETRAINED openai
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distill.utils import DistillInputError, cli_entry
from distill.utils.cli import ToolParser, check_port_free, port_number, summary

QUICKSTART = {
    "weights": Path("output/quickstart/vild/model_final.pth"),
    "semseg_weights": Path("output/quickstart/semseg/ce_pixel_distillation/model_final.pth"),
}


@cli_entry
def main(argv=None) -> int:
    d = QUICKSTART
    p = ToolParser(description=summary(__doc__))
    p.add_argument(
        "--config-file", default=None, help="the detector's yaml config (default: the checkpoint's own)"
    )
    p.add_argument(
        "--weights", default=str(d["weights"]), help="detector checkpoint ('' for none: zero-shot only)"
    )
    p.add_argument(
        "--semseg-config", default=None, help="the segmenter's yaml config (default: the checkpoint's own)"
    )
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
    from distill.config import load_config  # config errors come before Gradio and torch (seconds)

    load_config(args.config_file or None, args.opts)  # the overrides, on the given config or the defaults
    if args.semseg_config:
        load_config(args.semseg_config)
    check_port_free(args.host, args.port)  # before the models load: "serving on" is then true
    if args.semseg_weights and not os.path.isfile(args.semseg_weights):
        if args.semseg_weights != str(d["semseg_weights"]):
            raise DistillInputError(
                "segmenter weights not found: run `make quickstart` first, pass --semseg-weights, or '' for none",
                args.semseg_weights,
            )
        print(  # the quickstart's segmenter may not exist yet: detection alone
            f"note: no {args.semseg_weights}: the segmentation tab is off (--semseg-weights)", file=sys.stderr
        )
        args.semseg_weights = ""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise DistillInputError("the web demo needs Gradio: pip install -e '.[demo]'") from None
    from distill.integrations.web_demo import DemoModels, build_app, demo_configs, launch

    det_cfg, seg_cfg = demo_configs(args)
    models = DemoModels(det_cfg, args.weights, seg_cfg, args.semseg_weights or None)
    if args.weights:
        models.detector()  # a checkpoint that does not fit the config fails here, before the page opens
    app = build_app(models)
    try:
        launch(app, args.host, args.port, block=False)
    except OSError as e:  # the port taken since it was checked
        raise DistillInputError(f"cannot serve on {args.host}:{args.port} ({e}); pass --port") from None
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
