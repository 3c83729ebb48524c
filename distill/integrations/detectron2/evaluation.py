"""detectron2 `DatasetEvaluator` around the core open-vocabulary evaluators (COCO / LVIS protocol, base and
novel split), and the test-vocabulary switch used while evaluating.

`OVEvaluator.evaluate()` returns detectron2's nesting, {"bbox": {...}, "segm": {...}} (metrics on a 0-100
scale, NaN where a group is empty, as detectron2's EvalHook needs floats); `flatten_ov_results` turns it into the
core's flat box_ / mask_ keys that `format_ov_table` prints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import OrderedDict

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ...evaluation import DetectionEvaluator, load_ground_truth
from ...modeling.ov_predictor import using_vocabulary
from ...utils.io import atomic_write_json
from ..shared import load_test_vocabulary
from .datasets import load_ov_dataset

logger = logging.getLogger(__name__)
_PREFIX = {"bbox": "box_", "segm": "mask_"}


class OVEvaluator(DatasetEvaluator):
    """Box (and mask, when the model predicts masks) AP of one registered dataset, split into base / novel.

    Streaming: each batch is matched as it arrives (masks RLE-encoded once, by `instances_to_coco_json`),
    the results file is written as it goes, and ranks exchange compact rows, not detections.
    The model's class indices must be the dataset's contiguous ids, i.e. the test vocabulary is the dataset's
    class list (`test_vocabulary` sets it).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, distributed: bool = True):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        _, self.meta = load_ov_dataset(dataset_name)
        self._gt: dict | None = None
        self._ev: DetectionEvaluator | None = None

    def reset(self) -> None:
        self._ev = None

    def _evaluator(self, masks: bool) -> DetectionEvaluator:
        if self._ev is None:
            if self._gt is None:
                self._gt, _ = load_ground_truth(self.meta.json_file, self.meta.evaluator_type)
            results = (
                os.path.join(self.output_dir, "coco_instances_results.json") if self.output_dir else None
            )
            self._ev = DetectionEvaluator(
                self._gt,
                ("bbox", "segm") if masks else ("bbox",),
                self.meta.evaluator_type,
                self.meta.split,
                results_file=results,
                distributed=self.distributed,
            )
        return self._ev

    def process(self, inputs, outputs) -> None:
        ids = self.meta.category_ids
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            results = instances_to_coco_json(inst, inp["image_id"])
            for r in results:
                r["category_id"] = ids[r["category_id"]]
            self._evaluator(inst.has("pred_masks")).process([inp], [results])

    def evaluate(self) -> OrderedDict:
        masks = self._ev is not None and "segm" in self._ev.tasks
        if self.distributed and comm.get_world_size() > 1:  # a rank without images learns the tasks
            masks = any(comm.all_gather(masks))
        ev = self._evaluator(masks)
        if ev.num_predictions == 0 and comm.is_main_process():
            logger.warning("%s: no detections on this rank", self.dataset_name)
        metrics = ev.evaluate()
        if self.distributed and not comm.is_main_process():
            return OrderedDict()
        out = OrderedDict()
        for task, m in metrics.items():
            out[task] = {
                k: (math.nan if v is None else float(v))
                for k, v in m.items()
                if k not in ("num_images", "num_predictions")
            }
        if self.output_dir:
            atomic_write_json(
                os.path.join(self.output_dir, "metrics.json"), flatten_ov_results(out), indent=2
            )
        return out


def flatten_ov_results(results: dict) -> dict:
    """{"bbox": {...}, "segm": {...}} → {"box_AP": ..., "mask_AP50_novel": ...}; NaN → None."""
    flat = {}
    for task, metrics in results.items():
        for k, v in metrics.items():
            flat[_PREFIX.get(task, f"{task}_") + k] = None if isinstance(v, float) and math.isnan(v) else v
    return flat


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def test_vocabulary(model: torch.nn.Module, cfg, dataset_name: str):
    """While the block runs, the model scores the dataset's classes (MODEL.DISTILL.TEST_CLASS_EMBEDDINGS, in the
    dataset's order) with its novel classes marked for the ensemble; the training vocabulary comes back after."""
    heads = _unwrap(model).roi_heads
    _, meta = load_ov_dataset(dataset_name)
    vocab, novel = load_test_vocabulary(cfg, meta, heads.classifier.embed_dim)
    with using_vocabulary(heads, vocab, novel):
        yield
