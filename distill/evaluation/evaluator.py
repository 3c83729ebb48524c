"""`DetectionEvaluator`: open-vocabulary box / mask AP (COCO or LVIS protocol, base / novel and r / c / f),
fed image by image, with detectron2's DatasetEvaluator interface (reset / process / evaluate).

Memory is the ground truth plus ~30 bytes per kept detection; nothing else grows with the images seen.
In a distributed run each rank evaluates its own images and the ranks exchange the compact rows (`state`).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from ..data.ov_splits import CategorySplit, split_from_categories
from ..utils.errors import DistillInputError
from .ground_truth import AREA_NAMES, IOU_THRESHOLDS, GroundTruth
from .results_file import ResultsWriter
from .streaming import TaskAccumulator, accumulate, check_detections, prepare_image

logger = logging.getLogger(__name__)
TASKS = ("bbox", "segm")
PROTOCOLS = ("coco", "lvis")


def _group_mean(precision: np.ndarray, cat_index: Sequence[int]) -> float | None:
    """Mean of precision entries > -1 over the given category axis indices (axis 2)."""
    if len(cat_index) == 0:
        return None
    s = precision[:, :, list(cat_index)]
    s = s[s > -1]
    return float(np.mean(s)) * 100 if s.size else None


def split_metrics(precision: np.ndarray, cat_ids: Sequence[int], split: CategorySplit | None) -> dict:
    """AP / AP50 / AP75 for each split group; precision is [T, R, K] (area all, last max-dets)."""
    out: dict[str, float | None] = {}
    if split is None:
        return out
    pos = {c: k for k, c in enumerate(cat_ids)}
    for group, ids in split.groups().items():
        idx = [pos[c] for c in ids if c in pos]
        out[f"AP_{group}"] = _group_mean(precision, idx)
        out[f"AP50_{group}"] = _group_mean(precision[:1], idx)
        out[f"AP75_{group}"] = _group_mean(precision[5:6], idx)
    return out


class DetectionEvaluator:
    """Box (and mask) AP of one ground truth, split into base / novel (and LVIS r / c / f).

    Args:
        gt: a validated COCO / LVIS ground-truth dict.
        tasks: "bbox" and / or "segm"; both are fed from the same detections (masks as RLE dicts).
        protocol: "coco" (COCOeval: 100 per image and category, crowd) or "lvis" (LVISEval: 300 per image,
            federated negatives and not-exhaustive categories).
        split: base / novel groups; by default the ground truth's own.
        results_file: stream every detection to this COCO-json results file (written atomically at `evaluate`).
        distributed: in an initialised torch.distributed run, merge the ranks' rows at `evaluate`.
    """

    def __init__(
        self,
        gt: dict,
        tasks: Sequence[str] = ("bbox",),
        protocol: str = "coco",
        split: CategorySplit | None = None,
        results_file: str | os.PathLike | None = None,
        distributed: bool = True,
        chunk_groups: int = 512,
    ):
        for t in tasks:
            if t not in TASKS:
                raise DistillInputError(f"unknown task {t!r}; expected one of {', '.join(TASKS)}")
        if protocol not in PROTOCOLS:
            raise DistillInputError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        self.tasks, self.protocol = tuple(tasks), protocol
        self.split = split if split is not None else split_from_categories(gt["categories"])
        self._gt = {t: GroundTruth(gt, protocol, t) for t in self.tasks}
        g = self._gt[self.tasks[0]]
        self.cat_ids, self.num_images = g.cat_ids, len(g.img_ids)
        freq = {int(c["id"]): c.get("frequency") for c in gt["categories"]}
        self.freq_groups = {f: [k for k, c in enumerate(g.cat_ids) if freq[int(c)] == f] for f in "rcf"}
        self.results_file, self.distributed, self.chunk_groups = results_file, distributed, chunk_groups
        self.reset()

    def reset(self) -> None:
        self._acc = {t: TaskAccumulator(self._gt[t], self.chunk_groups) for t in self.tasks}
        self._seen = np.zeros(self.num_images, dtype=bool)
        self.num_predictions = 0
        if getattr(self, "_writer", None) is not None:
            self._writer.abort()
        self._writer = ResultsWriter(self.results_file) if self.results_file else None

    # ------------------------------------------------------------------ feeding
    def add_image(self, image_id: int, category_ids, scores, boxes=None, masks: list | None = None) -> None:
        """One image's detections: category_ids, scores (N,), boxes (N, 4) xywh, masks N RLE dicts."""
        g = self._gt[self.tasks[0]]
        pos = g.img_pos.get(int(image_id))
        if pos is None:
            raise DistillInputError(f"prediction names unknown image_id {image_id!r}")
        if self._seen[pos]:
            raise DistillInputError(f"image_id {image_id!r} was evaluated twice")
        self._seen[pos] = True
        try:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise DistillInputError(f"scores of image_id {image_id!r} are not numbers ({e})") from None
        check_detections(len(scores), boxes, scores, masks)
        cat = g.cat_index(category_ids)
        self.num_predictions += len(cat)
        idx = prepare_image(g, pos, cat, scores)
        for task, acc in self._acc.items():
            if task == "bbox":
                if boxes is None:
                    raise DistillInputError("bbox evaluation needs boxes")
                geom = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[idx]
                area = geom[:, 2] * geom[:, 3]
            else:
                if masks is None:
                    raise DistillInputError("segm evaluation needs masks (RLE dicts)")
                geom = [masks[i] for i in idx]
                area = mask_utils.area(geom).astype(np.float64) if geom else np.zeros(0)
            acc.add_image(pos, cat[idx], scores[idx], geom, area)

    def add_results(self, results: Iterable[dict]) -> None:
        """COCO-format result dicts (image_id, category_id, score, bbox and / or segmentation), any images."""
        by_image: dict = OrderedDict()
        for r in results:
            by_image.setdefault(r["image_id"], []).append(r)
        for image_id, rs in by_image.items():
            if self._writer is not None:
                self._writer.write(rs)
            try:
                boxes = np.array([r["bbox"] for r in rs], dtype=np.float64) if "bbox" in self.tasks else None
            except (TypeError, ValueError):
                raise DistillInputError(
                    f"boxes of image_id {image_id!r} are not [x, y, w, h] numbers"
                ) from None
            masks = [r["segmentation"] for r in rs] if "segm" in self.tasks else None
            self.add_image(image_id, [r["category_id"] for r in rs], [r["score"] for r in rs], boxes, masks)

    def process(self, inputs: Sequence[dict], outputs: Sequence[list[dict]]) -> None:
        """A batch: `inputs[i]["image_id"]`; `outputs[i]` that image's COCO-format result dicts (maybe empty)."""
        for inp, out in zip(inputs, outputs):
            if out:
                self.add_results([dict(r, image_id=inp["image_id"]) for r in out])
            else:
                self.add_image(inp["image_id"], [], [], np.zeros((0, 4)), [])

    # ------------------------------------------------------------------ ranks
    def state(self) -> dict:
        """The compact rows of every task and the images seen: what ranks exchange."""
        return {
            "rows": {t: a.rows() for t, a in self._acc.items()},
            "seen": np.packbits(self._seen),
            "num_predictions": self.num_predictions,
        }

    def merge(self, state: dict) -> None:
        seen = np.unpackbits(state["seen"], count=self.num_images).astype(bool)
        if (seen & self._seen).any():
            raise DistillInputError("the same image was evaluated on two ranks")
        self._seen |= seen
        self.num_predictions += state["num_predictions"]
        for t, a in self._acc.items():
            a.merge(state["rows"][t])

    # ------------------------------------------------------------------ results
    def evaluate(self) -> dict:
        """{task: flat metrics on a 0-100 scale (None where nothing to average)}; on every rank."""
        from .distributed import gather_to_main, world

        rank, size = world() if self.distributed else (0, 1)
        if self._writer is not None:
            self._writer.close(rank, size)
        if size > 1:
            states = gather_to_main(self.state())
            if rank == 0:
                for s in states[1:]:
                    self.merge(s)
        metrics = self._metrics() if rank == 0 else None
        if size > 1:
            from .distributed import broadcast_from_main

            metrics = broadcast_from_main(metrics)
        return metrics

    def _metrics(self) -> dict:
        out = {}
        for task, acc in self._acc.items():
            precision = accumulate(acc.rows(), self._gt[task].num_gt)
            out[task] = self._summarize(precision)
            out[task].update(num_images=self.num_images, num_predictions=self.num_predictions)
        return out

    def _summarize(self, precision: np.ndarray) -> dict:
        def mean(s):
            s = s[s > -1]
            return float(np.mean(s)) * 100 if s.size else None

        t50, t75 = (np.flatnonzero(IOU_THRESHOLDS == v) for v in (0.5, 0.75))
        m = {
            "AP": mean(precision[..., 0]),
            "AP50": mean(precision[t50][..., 0]),
            "AP75": mean(precision[t75][..., 0]),
        }
        for a, name in enumerate(AREA_NAMES[1:], start=1):
            m["AP" + name[0]] = mean(precision[..., a])
        if self.protocol == "lvis":
            for f, idx in self.freq_groups.items():
                m["AP" + f] = mean(precision[:, :, idx][..., 0])
        m.update(split_metrics(precision[..., 0], self.cat_ids.tolist(), self.split))
        return m
