"""detectron2 `DatasetEvaluator` around the core open-vocabulary evaluators (COCO / LVIS protocol, base and
novel split), and the test-vocabulary switch used while evaluating.

`OVEvaluator.evaluate()` returns detectron2's nesting, {"bbox": {...}, "segm": {...}} (metrics on a 0-100
scale, NaN where a group is empty, as detectron2's EvalHook needs floats); `flatten_ov_results` turns it into the
core's flat box_ / mask_ keys that `format_ov_table` prints.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections import OrderedDict

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ...evaluation import evaluate_detections
from ...modeling.vild import using_vocabulary
from ...utils.io import atomic_write_json
from ..shared import load_test_vocabulary
from .datasets import load_ov_dataset

logger = logging.getLogger(__name__)
_PREFIX = {"bbox": "box_", "segm": "mask_"}
_EMPTY = ("AP", "AP50", "AP75", "AP_base", "AP50_base", "AP75_base", "AP_novel", "AP50_novel", "AP75_novel")


class OVEvaluator(DatasetEvaluator):
    """Box (and mask, when the model predicts masks) AP of one registered dataset, split into base / novel.

    The model's class indices must be the dataset's contiguous ids, i.e. the test vocabulary is the dataset's
    class list (`test_vocabulary` sets it).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, distributed: bool = True):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        _, self.meta = load_ov_dataset(dataset_name)
        self._results: list[dict] = []

    def reset(self) -> None:
        self._results = []

    def process(self, inputs, outputs) -> None:
        ids = self.meta.category_ids
        for inp, out in zip(inputs, outputs):
            for r in instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"]):
                r["category_id"] = ids[r["category_id"]]
                self._results.append(r)

    def evaluate(self) -> OrderedDict:
        results = self._results
        if self.distributed:
            comm.synchronize()
            results = list(itertools.chain(*comm.gather(results, dst=0)))
            if not comm.is_main_process():
                return OrderedDict()
        tasks = ["bbox"] + (["segm"] if any("segmentation" in r for r in results) else [])
        out = OrderedDict()
        for task in tasks:
            if results:
                m = evaluate_detections(self.meta.json_file, results, task, self.meta.evaluator_type, self.meta.split)
            else:
                logger.warning("%s: no detections", self.dataset_name)
                m = {k: 0.0 for k in _EMPTY}
            out[task] = {k: (math.nan if v is None else float(v)) for k, v in m.items()
                         if k not in ("num_images", "num_predictions")}
        if self.output_dir:
            atomic_write_json(os.path.join(self.output_dir, "coco_instances_results.json"), results)
            atomic_write_json(os.path.join(self.output_dir, "metrics.json"), flatten_ov_results(out), indent=2)
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
