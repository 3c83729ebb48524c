#!/usr/bin/env python
"""Train the tiny open_clip teacher of the synthetic benchmark, or check a teacher's zero-shot accuracy.

    python tools/train_teacher.py --output-dir output/teacher            # train (resumes after a kill)
    python tools/train_teacher.py --eval-only --teacher synthetic-tiny-teacher   # zero-shot accuracy on val crops
    python tools/train_teacher.py --world methods --output-dir output/teacher_methods   # the method benchmark's

--world picks the synthetic world of the corpus and of the accuracy's benchmark (by default the quickstart's
benchmark, or the method benchmark's world, `benchmarks/methods.py`'s default one, in output/methods/world).

Accuracy: every annotated object of the benchmark's validation images, its region embedding (crops at 1x and
1.5x, centre geometry) classified against the ViLD prompt ensemble of all class names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

from distill.teacher.train_config import WORLDS, TeacherTrainConfig
from distill.utils import DistillInputError, cli_entry, dumps_json
from distill.utils.cli import ToolParser, positive_int, summary

FIELD_HELP = {
    "arch": "open_clip architecture of the teacher",
    "corpus_seed": "seed of the image-caption corpus",
    "corpus_images": "images in the training corpus",
    "steps": "training steps",
    "batch_size": "image-caption pairs per step",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "warmup": "linear warm-up steps",
    "seed": "training seed",
    "checkpoint_every": "steps between checkpoints (resume after a kill)",
    "world": "synthetic world of the corpus and of the accuracy's benchmark",
}
METHODS_WORLD_ROOT = (
    "output/methods/world"  # benchmarks/methods.py --output-dir output/methods makes the same
)


def _benchmark(path: str | None, world: str) -> Path:
    """The benchmark root the zero-shot accuracy is measured on, checked to hold a val split of `world`."""
    if path:
        from distill.data import synthetic_dataset
        from distill.data.synthetic import load_meta

        synthetic_dataset(path, "val")  # a mistyped root is one clear error
        found = load_meta(path).get("world", "quickstart")
        if found != world:
            raise DistillInputError(
                f"--benchmark is a {found} world, not {world} (pass --world {found})", path
            )
        return Path(path)
    from distill.data.synthetic import generate

    if world == "methods":
        from distill.data.synthetic_methods import MethodsWorldConfig

        return generate(METHODS_WORLD_ROOT, MethodsWorldConfig())
    from distill.integrations.quickstart import QUICKSTART_DATA

    return generate("output/quickstart/synthetic", QUICKSTART_DATA)


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(description=summary(__doc__))
    p.add_argument("--output-dir", default="output/teacher", help="checkpoints and the trained weights")
    p.add_argument("--eval-only", action="store_true", help="only measure zero-shot accuracy, no training")
    p.add_argument(
        "--teacher", default=None, help="model-zoo name or arch (eval); default: the trained weights"
    )
    p.add_argument("--benchmark", default=None, help="synthetic benchmark root (default: the quickstart's)")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    for f in dataclasses.fields(TeacherTrainConfig):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=f.default,
            choices=WORLDS if f.name == "world" else None,
            help=f"{FIELD_HELP[f.name]} (default {f.default})",
        )
    args = p.parse_args(argv)
    import torch

    from distill.teacher import create_teacher
    from distill.teacher.training import train_teacher, zero_shot_accuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TeacherTrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TeacherTrainConfig)}
    )
    if args.eval_only:
        bench = _benchmark(args.benchmark, cfg.world)
        teacher = (
            create_teacher(args.teacher)
            if args.teacher
            else create_teacher(cfg.arch, str(Path(args.output_dir) / "teacher_fp16.pt"))
        )
    else:
        bench = _benchmark(args.benchmark, cfg.world)  # checked before training, not after it
        weights = train_teacher(args.output_dir, cfg)
        for path in (weights, weights.with_suffix(".safetensors")):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"weights: {path} ({path.stat().st_size / 1e6:.1f} MB) sha256 {sha}")
        teacher = create_teacher(cfg.arch, str(weights))
    acc = zero_shot_accuracy(teacher, bench)
    print("| class | accuracy |\n|---|---|")
    for name, a in acc["per_class"].items():
        print(f"| {name} | {a:.1f} |")
    print(
        f"zero-shot accuracy: all {acc['acc_all']:.1f}  base {acc['acc_base']:.1f}  novel {acc['acc_novel']:.1f} "
        f"({acc['num_objects']} objects)"
    )
    print(dumps_json({k: v for k, v in acc.items() if k != "per_class"} | {"teacher": teacher.pretrained}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
