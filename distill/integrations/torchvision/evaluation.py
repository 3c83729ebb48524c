"""Streaming open-vocabulary evaluator of the torchvision backend (the mirror of detectron2/evaluation.py).

`OVEvaluator` has the DatasetEvaluator interface (reset / process / evaluate) an evaluation loop or hook
drives: each batch of detections is RLE-encoded once (`detections_to_coco`), written to the results file as
it comes and matched at once; ranks exchange compact rows, not detections.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...data.catalog import get_dataset
from ...evaluation import DetectionEvaluator, load_ground_truth
from ...evaluation.distributed import world
from ...utils.io import atomic_write_json
from .meta_arch import detections_to_coco

_PREFIX = {"bbox": "box_", "segm": "mask_"}


class OVEvaluator:
    """Box (and mask with MODEL.MASK_ON) AP of one registered dataset, base / novel (and LVIS r / c / f).

    Writes <output_dir>/coco_instances_results.json (streamed) and metrics.json (rank 0).
    """

    def __init__(self, cfg, dataset_name: str, output_dir: str | os.PathLike | None = None):
        _, self.meta = get_dataset(dataset_name)
        self.tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        self.output_dir = (
            Path(output_dir) if output_dir else Path(cfg.OUTPUT_DIR) / "inference" / dataset_name
        )
        self._gt, _ = load_ground_truth(self.meta.json_file, self.meta.evaluator_type)
        self._ev: DetectionEvaluator | None = None
        self.reset()

    def reset(self) -> None:
        if self._ev is not None:
            self._ev.reset()
            return
        self._ev = DetectionEvaluator(
            self._gt,
            self.tasks,
            self.meta.evaluator_type,
            self.meta.split,
            results_file=self.output_dir / "coco_instances_results.json",
        )

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """inputs: dataset dicts (their "image_id"); outputs: the model's detections, one dict per image."""
        ids = self.meta.category_ids
        self._ev.process(inputs, [detections_to_coco(o, i["image_id"], ids) for i, o in zip(inputs, outputs)])

    def evaluate(self) -> dict:
        """Flat metrics with box_ / mask_ keys, on every rank."""
        metrics = {}
        for task, m in self._ev.evaluate().items():
            metrics.update(
                {_PREFIX[task] + k: v for k, v in m.items() if k not in ("num_images", "num_predictions")}
            )
        metrics["num_predictions"] = self._ev.num_predictions
        if world()[0] == 0:
            atomic_write_json(self.output_dir / "metrics.json", metrics, indent=2)
        return metrics
