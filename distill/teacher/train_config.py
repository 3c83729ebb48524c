"""The tiny teacher's training recipe (no torch: tools/train_teacher.py builds its --help from it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TeacherTrainConfig:
    # the shipped teacher's recipe: a tiny open_clip ModifiedResNet (a tiny ViT learned shapes far slower)
    arch: str = "distill-tiny-rn"
    corpus_seed: int = 1000
    corpus_images: int = 4000
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 500
