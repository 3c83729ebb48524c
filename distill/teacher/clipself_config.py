"""CLIPSelf's recipe (no torch: tools/train_clipself.py builds its --help from it); the training is in
`distill.teacher.clipself`."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.errors import DistillInputError, check_ranges

SCHEDULES = ("cosine", "constant")
SAVE_DTYPES = ("fp16", "fp32")
GEOMETRIES = ("center", "stretch")  # distill.teacher.crops.GEOMETRIES (a test keeps them one)


@dataclass
class CLIPSelfConfig:
    """The recipe. Defaults fit the synthetic methods world (3,000 images of 128 px, tiny ViT at 64 px)."""

    arch: str = "distill-tiny-vit"
    pretrained: str = "none"
    steps: int = 1000  # ~5 epochs of the methods world at batch 16 (CLIPSelf: 6 epochs of COCO)
    batch_size: int = 16  # images per step (per process under torchrun; CLIPSelf: 2 per GPU x 8)
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 50  # CLIPSelf: 1,000 of ~44k steps (6 epochs of COCO at 2 x 8)
    schedule: str = "cosine"
    image_size: int = 128  # the student's input: longer side, padded to a square multiple of the patch
    student_ratio: float = 0.7  # CLIPSelf: 0.7 for B/16, 0.95 for L/14
    max_split: int = 6  # grid: m in 1..max_split, n in ceil(m/2)..2m
    max_cells: int = 20
    proposals: str = ""  # a proposals file (.json / .npz, `regions.load_proposals`) instead of grids
    top_k: int = 20  # proposals per image
    geometry: str = "center"  # how the teacher's crops are made (crops.GEOMETRIES)
    seed: int = 0
    checkpoint_every: int = 100
    save_dtype: str = "fp16"

    def __post_init__(self):
        check_ranges(
            self,
            positive=(
                "steps",
                "batch_size",
                "lr",
                "image_size",
                "max_split",
                "max_cells",
                "top_k",
                "checkpoint_every",
            ),
            nonneg=("weight_decay", "warmup"),
            unit=("student_ratio",),
        )
        for name, value, allowed in (
            ("schedule", self.schedule, SCHEDULES),
            ("geometry", self.geometry, GEOMETRIES),
            ("save_dtype", self.save_dtype, SAVE_DTYPES),
        ):
            if value not in allowed:
                raise DistillInputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
