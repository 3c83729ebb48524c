"""Evaluation of the torchvision detector in detectron2's shape: a `DetectionEvaluator` with
reset() / process(inputs, outputs) / evaluate() (a DatasetEvaluator, on the streaming core evaluator) fed by
`inference_on_dataset`, and `evaluate(cfg, model, dataset)` with the test vocabulary switched in."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ...data.catalog import get_dataset
from ...evaluation import DetectionEvaluator as OVDetectionEvaluator
from ...evaluation import load_ground_truth
from ...modeling.ov_predictor import using_vocabulary
from ...utils.io import atomic_write_json
from ..shared import load_test_vocabulary
from .engine.distributed import dist_info, unwrap
from .mapper import DatasetMapper
from .meta_arch import detections_to_coco
from .train_data import mapper_cfg

_PREFIX = {"bbox": "box_", "segm": "mask_"}


class DetectionEvaluator:
    """Box (and mask) AP of one registered dataset, base / novel split, as flat box_ / mask_ metrics; the
    model's class indices are the dataset's contiguous ids (its test vocabulary).

    Streaming (distill.evaluation.DetectionEvaluator): each batch is RLE-encoded once (`detections_to_coco`),
    written to `output_dir`/coco_instances_results.json as it comes and matched at once; ranks exchange
    compact rows, not detections. Rank 0 writes metrics.json; every rank gets the metrics."""

    def __init__(self, dataset_name: str, output_dir: str | Path, mask_on: bool = True):
        self.dataset_name, self.output_dir, self.mask_on = dataset_name, Path(output_dir), mask_on
        _, self.meta = get_dataset(dataset_name)
        self._gt, _ = load_ground_truth(self.meta.json_file, self.meta.evaluator_type)
        self._ev: OVDetectionEvaluator | None = None
        self.reset()

    def reset(self) -> None:
        if self._ev is not None:
            self._ev.reset()
            return
        self._ev = OVDetectionEvaluator(
            self._gt,
            ("bbox", "segm") if self.mask_on else ("bbox",),
            self.meta.evaluator_type,
            self.meta.split,
            results_file=self.output_dir / "coco_instances_results.json",
        )

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        ids = self.meta.category_ids
        self._ev.process(inputs, [detections_to_coco(o, i["image_id"], ids) for i, o in zip(inputs, outputs)])

    def evaluate(self) -> dict:
        metrics: dict = {}
        for task, m in self._ev.evaluate().items():
            metrics.update(
                {_PREFIX[task] + k: v for k, v in m.items() if k not in ("num_images", "num_predictions")}
            )
        metrics["num_predictions"] = self._ev.num_predictions
        if dist_info()[0] == 0:
            atomic_write_json(self.output_dir / "metrics.json", metrics, indent=2)
        return metrics


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, data: Iterable[list[dict]], evaluator) -> dict:
    """Run `model` (eval mode, restored after) on every batch of `data` and score it with `evaluator`."""
    evaluator.reset()
    was_training = model.training
    model.eval()
    try:
        for inputs in data:
            evaluator.process(inputs, model(inputs))
    finally:
        model.train(was_training)
    return evaluator.evaluate()


def evaluate(cfg, model: torch.nn.Module, dataset_name: str, output_dir: str | None = None) -> dict:
    """Open-vocabulary evaluation on one dataset with the test vocabulary; flat metrics with box_ / mask_ keys."""
    rank, world = dist_info()
    dicts, meta = get_dataset(dataset_name)
    net = unwrap(model)
    vocab, novel = load_test_vocabulary(cfg, meta, net.roi_heads.classifier.embed_dim)
    mapper = DatasetMapper(mapper_cfg(cfg, is_train=False))
    evaluator = DetectionEvaluator(
        dataset_name, Path(output_dir or cfg.OUTPUT_DIR) / "inference" / dataset_name, cfg.MODEL.MASK_ON
    )
    with using_vocabulary(net.roi_heads, vocab, novel):
        return inference_on_dataset(net, ([mapper(d)] for d in dicts[rank::world]), evaluator)
