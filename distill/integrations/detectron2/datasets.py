"""Datasets in detectron2's catalogs, and the mapper that attaches the distillation method's targets.

    register_synthetic(root)        distill_synthetic_{train,val}, distill_synthetic_lvis_{train,val}
    register_ov_coco(datasets_root) distill_ov_coco_{train,val}
    register_ov_lvis(datasets_root) distill_ov_lvis_{train,val}

Explicit calls only (never at import); the `distill_` prefix cannot clash with detectron2's built-in names.
Each name is registered in the core catalog (`distill.data.catalog`) and in detectron2's DatasetCatalog;
MetadataCatalog gets thing_classes, the id mapping, json_file, evaluator_type and the base / novel split
when the dataset is first loaded (the files may not exist when it is registered).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T

from ...data import catalog as core_catalog
from ...data.datasets import DatasetMetadata
from ...data.images import check_image_complete
from ...methods import METHOD_TARGETS, target_source

logger = logging.getLogger(__name__)


class ResizeShortestEdge(T.ResizeShortestEdge):
    """detectron2's ResizeShortestEdge with each side at least one pixel: a 1x4000 sliver would otherwise
    resize to a 0-pixel side and fail inside the transform."""

    def get_transform(self, image):
        t = super().get_transform(image)
        if isinstance(t, T.ResizeTransform) and min(t.new_h, t.new_w) < 1:
            return T.ResizeTransform(t.h, t.w, max(1, t.new_h), max(1, t.new_w), t.interp)
        return t


def at_least_one_pixel(augmentations: list) -> list:
    """detectron2's ResizeShortestEdge in a list of augmentations replaced by the one above."""
    return [
        ResizeShortestEdge(a.short_edge_length, a.max_size, "range" if a.is_range else "choice", a.interp)
        if type(a) is T.ResizeShortestEdge
        else a
        for a in augmentations
    ]


def load_ov_dataset(name: str) -> tuple[list[dict], DatasetMetadata]:
    """Dataset dicts and the core metadata of a registered name; fills detectron2's MetadataCatalog."""
    dicts, meta = core_catalog.get_dataset(name)
    m = MetadataCatalog.get(name)
    if not hasattr(m, "thing_classes"):
        m.set(
            thing_classes=list(meta.thing_classes),
            thing_dataset_id_to_contiguous_id=dict(meta.thing_dataset_id_to_contiguous_id),
            json_file=meta.json_file,
            image_root=meta.image_root,
            evaluator_type=meta.evaluator_type,
            base_classes=[meta.thing_classes[i] for i in meta.contiguous_ids("base")],
            novel_classes=[meta.thing_classes[i] for i in meta.contiguous_ids("novel")],
        )
    return dicts, meta


def _register_d2(names: list[str]) -> list[str]:
    for name in names:
        if name in DatasetCatalog.list():  # re-registering replaces, as in the core catalog
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():  # filled on first load only
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda n=name: load_ov_dataset(n)[0])
    return names


def register_synthetic(root: str | os.PathLike, prefix: str = "distill_synthetic") -> list[str]:
    return _register_d2(core_catalog.register_synthetic(root, prefix))


def register_all(root: str | os.PathLike) -> list[str]:
    return _register_d2(core_catalog.register_all(root))


def register_file_specs(names) -> list[str]:
    """``coco:A.json:IMAGES`` dataset names (one's own data) in both catalogs."""
    return _register_d2(core_catalog.register_file_specs(names))


def register_ov_coco(datasets_root: str | os.PathLike, prefix: str = "distill_ov_coco") -> list[str]:
    return _register_d2(core_catalog.register_ov_coco(datasets_root, prefix))


def register_ov_lvis(datasets_root: str | os.PathLike, prefix: str = "distill_ov_lvis") -> list[str]:
    return _register_d2(core_catalog.register_ov_lvis(datasets_root, prefix))


def _polygons_to_rle(ann: dict, h: int, w: int) -> dict:
    segm = ann.get("segmentation")
    if not isinstance(segm, list) or not segm:
        return ann
    import pycocotools.mask as mask_utils

    return {**ann, "segmentation": mask_utils.merge(mask_utils.frPyObjects(segm, h, w))}


class OpenVocabDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper; in training it also attaches, per image, the distillation method's targets
    (`distill.methods.target_source`, e.g. ViLD's region-store rows) moved by the image's own transforms
    (resize, crop, flip), under `distill.methods.METHOD_TARGETS`.

    RLE masks (synthetic, LVIS-style files) are read as bitmasks when INPUT.MASK_FORMAT is "polygon".
    """

    @configurable
    def __init__(self, is_train: bool = True, *, method_targets=None, crops: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.crops = crops  # LSJ crops: polygons are cut as masks (detectron2's polygon crop needs shapely)
        self.method_targets = method_targets

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = at_least_one_pixel(ret["augmentations"])
        j = cfg.INPUT.LSJ
        if is_train and j.ENABLED:  # large-scale jitter replaces ResizeShortestEdge (detectron2's LSJ recipe)
            ret["augmentations"] = [
                T.ResizeScale(j.MIN_SCALE, j.MAX_SCALE, j.SIZE, j.SIZE),
                T.FixedSizeCrop((j.SIZE, j.SIZE), pad=False),
                *[a for a in ret["augmentations"] if isinstance(a, T.RandomFlip)],
            ]
            ret["recompute_boxes"] = cfg.MODEL.MASK_ON  # boxes of cropped masks follow the masks
            ret["crops"] = True
        ret["method_targets"] = target_source(cfg, is_train) if is_train else None
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        # semantic masks are not used by the detector: do not read them
        d = {k: v for k, v in dataset_dict.items() if k != "sem_seg_file_name"}
        check_image_complete(d["file_name"])  # a truncated file is refused as unreadable, not read in part
        if self.crops and self.use_instance_mask and "annotations" in d:
            d["annotations"] = [_polygons_to_rle(a, d["height"], d["width"]) for a in d["annotations"]]
        return super().__call__(d)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        fmt = self.instance_mask_format
        if (
            self.use_instance_mask
            and fmt == "polygon"
            and any(isinstance(a.get("segmentation"), dict) for a in dataset_dict["annotations"])
        ):
            self.instance_mask_format = "bitmask"
        try:
            super()._transform_annotations(dataset_dict, transforms, image_shape)
        finally:
            self.instance_mask_format = fmt
        if self.method_targets is not None:

            def transform(boxes: torch.Tensor) -> torch.Tensor:  # original pixels → this record's input image
                return torch.as_tensor(
                    transforms.apply_box(boxes.numpy().astype(np.float32)), dtype=torch.float32
                )

            dataset_dict[METHOD_TARGETS] = self.method_targets(
                dataset_dict["image_id"], transform, image_shape
            )
