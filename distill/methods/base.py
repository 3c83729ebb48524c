"""The interface a distillation method implements, and what the open-vocabulary box predictor hands it.

A method is an `nn.Module` inside the student (`OpenVocabBoxPredictor.method`): the parameters it adds are its
own submodules (saved in the student's checkpoint, found by the optimiser like any other). Per hook:

    config_node / config_keys   its keys under MODEL.DISTILL.<node> (`Key`: default and range, once)
    target_source(cfg, is_train) what both backends' mappers attach to a training record (a `TargetSource`)
    build(feature_dim, embed_dim) its heads, built once the box head's width is known
    extra_rois(targets)          boxes per image pooled with the sampled RoIs (ViLD: the region-store boxes)
    step_rois(context)           the same from the whole step (`StepContext`: proposals, ground truth, images;
                                 BARON: its bags); the default asks `extra_rois`
    losses(batch)                its losses from the sampled RoIs, its extra RoIs, the labels and its targets
    scores(outputs)              (N, C + 1) class scores at inference, background last
    check_config(cfg)            fail early on a model config the method cannot run with (required_config)
    uses_teacher                 True: the trainer hands it the frozen teacher (`self.teacher`)

Conventions: C classes in the current vocabulary, logits (N, C + 1) with background LAST; D the teacher's
embedding width; F the box head's output width.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..modeling.ov_predictor import RoIBatch, RoIOutputs, StepContext
from ..utils.errors import DistillInputError
from .registry import Key

__all__ = ["DistillMethod", "RoIBatch", "RoIOutputs", "StepContext", "TargetSource"]


class TargetSource:
    """What a method attaches to a training record, on the data-loader side (picklable: it travels to
    data-loader workers; open files lazily). `__call__` returns the record's targets or None."""

    def __call__(self, image_id, transform_boxes, image_hw: tuple[int, int]) -> Any:
        """image_id: the record's id; transform_boxes: (M, 4) XYXY in the original image → the same boxes in the
        input image (the record's resize, crop and flip); image_hw: the input image's (h, w)."""
        raise NotImplementedError


class DistillMethod(nn.Module):
    """Base class of a distillation method (see the module docstring). The default is the text classifier's
    cross entropy alone, with softmax scores: ViLD-text without its novel-logit option."""

    config_node: ClassVar[str] = ""
    config_keys: ClassVar[dict[str, Key]] = {}
    uses_teacher: ClassVar[bool] = False
    # config values outside its node the method cannot run without (e.g. F-VLM's MODEL.BACKBONE.NAME):
    # `check_config` refuses others in one line, benchmarks set them
    required_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, options=None):
        """options: the method's config node (MODEL.DISTILL.<config_node>), or None for the keys' defaults."""
        super().__init__()
        self.options = options

    def option(self, key: str):
        """The value of one of the method's keys (its default without a config)."""
        if self.options is not None and key in self.options:
            return self.options[key]
        return self.config_keys[key].default

    # ---------------------------------------------------------------- data
    @classmethod
    def target_source(cls, cfg, is_train: bool) -> TargetSource | None:
        """The training records' targets (None: the method needs none)."""
        return None

    @classmethod
    def check_training(cls, cfg, image_ids: Sequence, vocabulary) -> None:
        """Fail early, with one clear line, on training inputs the method cannot use (its files, ...);
        `vocabulary`: the training `ClassEmbeddings`."""

    @classmethod
    def check_config(cls, cfg) -> None:
        """Fail early, with one clear line, on a model config the method cannot run with (called by
        `build_method`, so by both backends' builders). The default checks `required_config`."""
        for key, want in cls.required_config.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            if node != want:
                raise DistillInputError(
                    f"MODEL.DISTILL.METHOD {cfg.MODEL.DISTILL.METHOD} needs {key} {want} (got {node})"
                )

    # ---------------------------------------------------------------- model
    def build(self, feature_dim: int, embed_dim: int) -> None:
        """Add the method's own heads (called once by the predictor, after its shared heads)."""

    def extra_rois(self, targets: list | None) -> list[torch.Tensor] | None:
        """Per image (M_i, 4) XYXY boxes in the input image to pool with the sampled RoIs (None: none)."""
        return None

    def step_rois(self, context: StepContext) -> list[torch.Tensor] | None:
        """Per image (M_i, 4) XYXY boxes in the input image to pool with this step's sampled RoIs (None: none);
        what the losses need later goes to `context.state` (the same context reaches `losses` as
        `batch.context`). The default: `extra_rois(context.targets)`."""
        return self.extra_rois(context.targets)

    def losses(self, batch: RoIBatch) -> dict[str, torch.Tensor]:
        from ..modeling.losses import vild_text_loss

        return {"loss_cls": vild_text_loss(batch.logits, batch.labels)}

    def scores(self, out: RoIOutputs) -> torch.Tensor:
        """(N, C + 1) class scores, background last."""
        return out.logits.softmax(-1)

    # ---------------------------------------------------------------- teacher
    def set_teacher(self, teacher) -> None:
        """The frozen teacher (`distill.teacher.Teacher`) for methods with `uses_teacher`: no gradients, kept out
        of `parameters()` (so out of the optimiser and of the student's checkpoint), moved with the student."""
        for p in teacher.model.parameters():
            p.requires_grad_(False)
        teacher.model.eval()
        device = next((t.device for t in self.parameters()), None) or next(
            (b.device for b in self.buffers()), None
        )
        if device is not None:
            teacher.model.to(device)
        object.__setattr__(self, "_teacher", teacher)  # not a submodule: no state_dict, no parameters()

    @property
    def teacher(self):
        t = self.__dict__.get("_teacher")
        if t is None:
            raise RuntimeError(f"method {type(self).__name__} has no teacher: set_teacher was not called")
        return t

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        t = self.__dict__.get("_teacher")
        if t is not None:
            t.model._apply(fn, *args, **kwargs)
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        t = self.__dict__.get("_teacher")
        if t is not None:
            t.model.eval()  # a frozen teacher: dropout and norms stay in eval
        return self
