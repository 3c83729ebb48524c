#!/usr/bin/env python
"""Open-vocabulary semantic segmentation on the synthetic benchmark: cross entropy alone vs cross entropy +
pixel distillation, one schedule, one seed.

    python benchmarks/segmentation_ablation.py [--output-dir output/segmentation_ablation]
        [--quickstart-dir output/quickstart] [--teacher ARCH_OR_ZOO_NAME] [--teacher-weights PATH]
        [--dense-targets regions|windows|pixels] [--proposals FILE] [--region-store DIR] [--weights FILE]
        [--max-iter N] [KEY VALUE ...]

Uses (or writes) the quickstart's synthetic benchmark, trains both variants on the base classes (novel pixels
ignored) from the same start (the quickstart's ViLD student's backbone and FPN, with that run's proposals and
region store; --weights "" trains from scratch), evaluates all classes on the validation images, prints the
table (mIoU of base and novel classes, their harmonic mean, mIoU and pixel accuracy), then one line of JSON.
Dense teacher targets not painted from the region store are cached under the output folder, so both rows (and
reruns) share them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from distill.integrations import quickstart
from distill.utils import cli_entry


def metrics_line(result: dict) -> str:
    """One line of JSON with the headline numbers of each row."""
    from distill.evaluation import SEM_SEG_TABLE_KEYS

    return json.dumps(
        {
            name: {k: (None if m.get(k) is None else round(m[k], 2)) for k, _ in SEM_SEG_TABLE_KEYS}
            for name, m in result["rows"].items()
        }
        | {"dense_targets": result["dense_targets"]}
    )


@cli_entry
def main(argv=None) -> int:
    from distill.data.synthetic import generate
    from distill.evaluation import format_sem_seg_table
    from distill.integrations.torchvision.sem_seg import load_semseg_config, train_and_evaluate_segmenter
    from distill.teacher import create_teacher

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--output-dir", default="output/segmentation_ablation")
    p.add_argument("--quickstart-dir", default="output/quickstart")
    p.add_argument("--teacher", default=quickstart.TEACHER)
    p.add_argument("--teacher-weights", default=None)
    p.add_argument(
        "--dense-targets",
        choices=("regions", "windows", "pixels"),
        default=None,
        help="override MODEL.DISTILL.SEM_SEG.DENSE_TARGETS",
    )
    p.add_argument(
        "--proposals",
        default=None,
        help="MODEL.DISTILL.SEM_SEG.PROPOSALS (regions; default QUICKSTART_DIR/proposals_train.json)",
    )
    p.add_argument(
        "--region-store",
        default=None,
        help="MODEL.DISTILL.SEM_SEG.REGION_STORE (regions painted from it; default QUICKSTART_DIR/regions; "
        '"": crop again)',
    )
    p.add_argument(
        "--weights",
        default=None,
        help="MODEL.WEIGHTS, the detector checkpoint whose backbone both rows start from (default "
        'QUICKSTART_DIR/vild/model_final.pth; "": scratch)',
    )
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)
    root = generate(
        Path(args.quickstart_dir) / "synthetic", quickstart.QUICKSTART_DATA, progress=not args.quiet
    )
    # the student, its proposals and region store of that quickstart run; flags and KEY VALUE pairs come later
    overrides = quickstart.semseg_inputs(Path(args.quickstart_dir))
    for key, value in (
        ("MODEL.DISTILL.SEM_SEG.DENSE_TARGETS", args.dense_targets),
        ("MODEL.DISTILL.SEM_SEG.PROPOSALS", args.proposals or None),
        ("MODEL.DISTILL.SEM_SEG.REGION_STORE", args.region_store),
        ("MODEL.WEIGHTS", args.weights),
    ):
        if value is not None:
            overrides += [key, value]
    cfg = load_semseg_config(overrides + list(args.overrides))
    teacher = create_teacher(args.teacher, args.teacher_weights)
    t0 = time.perf_counter()
    result = train_and_evaluate_segmenter(
        root, args.output_dir, teacher, cfg, max_iter=args.max_iter, progress=not args.quiet
    )
    trained = ", ".join(f"{k} {v:.0f} s" for k, v in result["train_seconds"].items())
    print(
        f"\nsemantic segmentation, synthetic benchmark ({result['num_train']} train / {result['num_val']} val "
        f"images, {result['max_iter']} iterations of {cfg.SOLVER.IMS_PER_BATCH}, dense targets: "
        f"{result['dense_targets']} ({result['dense_target_seconds']:.0f} s), backbone: {result['init']}, "
        f"training: {trained}, {time.perf_counter() - t0:.0f} s in all)\n"
    )
    print(format_sem_seg_table(result["rows"]))
    print(metrics_line(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
