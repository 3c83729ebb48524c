"""Settings of tools/train_prompts.py's learners (no torch import: the tool's --help stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils.errors import DistillInputError, check_ranges

SUFFIX = ".safetensors"  # learned-prompt files


@dataclass
class PromptTrainConfig:
    """One learner's settings; field metadata \"help\" is the tool's option help."""

    method: str = field(default="coop", metadata={"help": "coop | detpro | clip-adapter"})
    m: int = field(default=0, metadata={"help": "context vectors (0: the token count of --init)"})
    init: str = field(default="a photo of a", metadata={"help": "hand words the context starts from"})
    class_specific: bool = field(
        default=False, metadata={"help": "one context per class instead of one shared"}
    )
    iou_bins: tuple = (0.5, 0.6, 0.7, 0.8, 0.9, 1.01)  # DetPro's context grading: K = len - 1 prompts
    fg_iou: float = field(
        default=0.5, metadata={"help": "DetPro: IoU with a base box from which a proposal is foreground"}
    )
    bg_weight: float = field(
        default=1.0,
        metadata={"help": "DetPro: weight of the background term (equal similarity to every base class)"},
    )
    base_templates: str = field(
        default="vild", metadata={"help": "CLIP-Adapter: the hand template set it adapts"}
    )
    alpha: float = field(default=0.2, metadata={"help": "CLIP-Adapter: residual ratio"})
    reduction: int = field(default=4, metadata={"help": "CLIP-Adapter: bottleneck reduction of the MLP"})
    steps: int = field(default=300, metadata={"help": "training steps"})
    batch_size: int = field(default=256, metadata={"help": "samples per step"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    checkpoint_every: int = field(default=50, metadata={"help": "steps between resumable checkpoints"})

    def __post_init__(self):
        check_ranges(
            self,
            positive=("reduction", "batch_size", "lr", "checkpoint_every"),
            nonneg=("m", "steps", "bg_weight"),  # 0 steps: the context as initialised
            unit=("fg_iou", "alpha"),
        )
        bins = tuple(self.iou_bins)
        if len(bins) < 2 or any(b >= a for a, b in zip(bins[1:], bins)) or not 0 <= bins[0]:
            raise DistillInputError(f"iou_bins must be >= 2 increasing edges from 0 up, got {bins}")
