"""The tiny teacher's training recipe (no torch: tools/train_teacher.py builds its --help from it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.errors import DistillInputError, check_ranges

WORLDS = ("quickstart", "methods")  # the synthetic worlds a corpus can be drawn from (distill.data.synthetic)


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
    # the corpus's world: its categories are the teacher's vocabulary (a checkpoint without this key: quickstart)
    world: str = "quickstart"

    def __post_init__(self):
        check_ranges(
            self,
            positive=("corpus_images", "steps", "batch_size", "lr", "checkpoint_every"),
            nonneg=("weight_decay", "warmup"),
        )
        if self.world not in WORLDS:
            raise DistillInputError(f"world must be one of {', '.join(WORLDS)}, got {self.world!r}")
