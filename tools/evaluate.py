#!/usr/bin/env python
"""Evaluate COCO-format predictions open-vocabulary: overall, base and novel AP (LVIS: APr / APc / APf).

    python tools/evaluate.py --gt GT.json --predictions PRED.json --task bbox|segm \
        [--protocol coco|lvis] --output metrics.json

Writes a flat json of metrics on a 0-100 scale (AP, AP50, AP75, APs, APm, APl, AP50_novel, AP50_base,
..., APr, APc, APf for LVIS), from the streaming evaluator the trainers use (distill.evaluation; the numbers
equal COCOeval / LVISEval). Bad input: one line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import sys

from distill.utils import atomic_write_json, cli_entry, dumps_json, read_json
from distill.utils.cli import ToolParser, summary
from distill.utils.io import check_not_input


def format_table(metrics: dict) -> str:
    keys = [
        k
        for k in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AP50_base", "AP50_novel", "AP_base", "AP_novel")
        if k in metrics
    ]
    cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return (
        "| "
        + " | ".join(keys)
        + " |\n|"
        + "---|" * len(keys)
        + "\n| "
        + " | ".join(cell(metrics[k]) for k in keys)
        + " |"
    )


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--gt", required=True, help="ground-truth json (COCO or LVIS format)")
    p.add_argument(
        "--predictions",
        required=True,
        help="COCO-format result list (json), or tools/demo.py's predictions.json (images matched by "
        "file name, classes by name)",
    )
    p.add_argument("--task", choices=("bbox", "segm"), default="bbox", help="box or mask AP")
    p.add_argument(
        "--protocol",
        choices=("coco", "lvis"),
        default="coco",
        help="lvis: federated LVIS evaluation with APr / APc / APf",
    )
    p.add_argument("--output", help="metrics json to write (atomically)")
    args = p.parse_args(argv)
    if args.output:
        check_not_input(args.output, [args.gt, args.predictions], "--output")
    from distill.evaluation import evaluate_detections
    from distill.evaluation.results import dataset_style_to_results, is_dataset_style, looks_like_object

    preds = args.predictions  # a result list: read by the evaluator, whose errors name the file
    if looks_like_object(args.predictions):
        data = read_json(args.predictions, what="predictions file")
        if is_dataset_style(data):
            preds = dataset_style_to_results(
                data, read_json(args.gt, what="ground-truth json"), args.predictions
            )
    metrics = evaluate_detections(
        args.gt, preds, task=args.task, protocol=args.protocol, source=args.predictions
    )
    metrics = {"task": args.task, "protocol": args.protocol, **metrics}
    if args.output:
        atomic_write_json(args.output, metrics, indent=2)
    print(format_table(metrics))
    print(dumps_json(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
