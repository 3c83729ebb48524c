"""Evaluation of the torchvision detector in detectron2's shape: a `DetectionEvaluator` with
reset() / process(inputs, outputs) / evaluate() (a DatasetEvaluator; a streaming evaluator plugs in the same
way) fed by `inference_on_dataset`, and `evaluate(cfg, model, dataset)` with the test vocabulary switched in."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
import torch.distributed as dist

from ...data.catalog import get_dataset
from ...evaluation import evaluate_detections
from ...modeling.vild import using_vocabulary
from ...utils.io import atomic_write_json
from ..shared import load_test_vocabulary
from .engine.distributed import dist_info, unwrap
from .mapper import DatasetMapper
from .meta_arch import detections_to_coco
from .train_data import mapper_cfg

_EMPTY = ("AP", "AP50", "AP75", "AP_base", "AP50_base", "AP75_base", "AP_novel", "AP50_novel", "AP75_novel")


class DetectionEvaluator:
    """Box (and mask) AP of one registered dataset, base / novel split, as flat box_ / mask_ metrics; the
    model's class indices are the dataset's contiguous ids (its test vocabulary). Rank 0 writes
    `output_dir`/coco_instances_results.json and metrics.json; every rank gets the metrics."""

    def __init__(self, dataset_name: str, output_dir: str | Path, mask_on: bool = True):
        self.dataset_name, self.output_dir, self.mask_on = dataset_name, Path(output_dir), mask_on
        _, self.meta = get_dataset(dataset_name)
        self._results: list[dict] = []

    def reset(self) -> None:
        self._results = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, det in zip(inputs, outputs):
            self._results += detections_to_coco(det, inp["image_id"], self.meta.category_ids)

    def evaluate(self) -> dict:
        rank, world = dist_info()
        results = self._results
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        metrics: dict = {}
        if rank == 0:
            atomic_write_json(self.output_dir / "coco_instances_results.json", results)
            m = self.meta
            for task in ["bbox", "segm"] if self.mask_on else ["bbox"]:
                prefix = "box_" if task == "bbox" else "mask_"
                got = {k: 0.0 for k in _EMPTY} if not results else evaluate_detections(
                    m.json_file, results, task, m.evaluator_type, m.split)
                metrics.update({prefix + k: v for k, v in got.items() if k not in ("num_images", "num_predictions")})
            metrics["num_predictions"] = len(results)
            atomic_write_json(self.output_dir / "metrics.json", metrics, indent=2)
        if world > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
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
    evaluator = DetectionEvaluator(dataset_name, Path(output_dir or cfg.OUTPUT_DIR) / "inference" / dataset_name,
                                   cfg.MODEL.MASK_ON)
    with using_vocabulary(net.roi_heads, vocab, novel):
        return inference_on_dataset(net, ([mapper(d)] for d in dicts[rank::world]), evaluator)
