"""Named datasets, registered by explicit calls (never at import). Names carry a ``distill_`` prefix so
they cannot clash with detectron2's built-in names.

    register_synthetic(root)            distill_synthetic_{train,val}      (COCO json) and
                                        distill_synthetic_lvis_{train,val} (LVIS json)
    register_ov_coco(datasets_root)     distill_ov_coco_{train,val}        (files of tools/prepare_ov_coco.py)
    register_ov_lvis(datasets_root)     distill_ov_lvis_{train,val}        (files of tools/prepare_ov_lvis.py)

A name of the form ``coco:ANNOTATIONS.json:IMAGE_FOLDER`` (or ``lvis:...``) is one's own dataset: it needs no
registration, so `DATASETS.TRAIN ("coco:my/train.json:my/images",)` trains on it from the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..utils.errors import DistillInputError
from .datasets import DatasetMetadata, load_coco_json, load_lvis_json

_CATALOG: dict[str, Callable[[], tuple[list[dict], DatasetMetadata]]] = {}


def register(name: str, loader: Callable[[], tuple[list[dict], DatasetMetadata]]) -> None:
    """Register a loader returning (dataset dicts, metadata); re-registering the same name replaces it."""
    _CATALOG[name] = loader


def registered() -> list[str]:
    return sorted(_CATALOG)


def parse_file_spec(name: str) -> tuple[str, Path, Path] | None:
    """("coco" | "lvis", json, image folder) of a ``coco:A.json:IMAGES`` name, else None."""
    kind, sep, rest = name.partition(":")
    if not sep or kind not in ("coco", "lvis"):
        return None
    ann, sep, images = rest.partition(".json:")
    if sep:
        ann += ".json"
    else:  # a mistyped suffix (train.jsn) is a file not found, not a malformed name
        ann, sep, images = rest.rpartition(":")
    if not sep or not ann or not images:
        raise DistillInputError(f"dataset {name!r}: expected {kind}:ANNOTATIONS.json:IMAGE_FOLDER")
    ann, images = Path(ann), Path(images)
    if not ann.is_file():
        raise DistillInputError(f"annotation file of dataset {name!r} not found", ann)
    if not images.is_dir():
        raise DistillInputError(f"image folder of dataset {name!r} not found", images)
    return kind, ann, images


def register_file_specs(names) -> list[str]:
    """Register the ``coco:A.json:IMAGES`` names among `names` (e.g. DATASETS.TRAIN + DATASETS.TEST)."""
    out = []
    for name in names:
        spec = parse_file_spec(name)
        if spec is not None:
            kind, ann, images = spec
            loader = load_coco_json if kind == "coco" else load_lvis_json
            register(name, lambda a=ann, i=images, f=loader: f(a, i))
            out.append(name)
    return out


def get_dataset(name: str) -> tuple[list[dict], DatasetMetadata]:
    if name not in _CATALOG and parse_file_spec(name) is not None:
        register_file_specs([name])
    if name not in _CATALOG:
        hint = f"; registered: {', '.join(registered())}" if _CATALOG else ""
        raise DistillInputError(f"unknown dataset {name!r}{hint} (register it with distill.data.catalog)")
    return _CATALOG[name]()


def register_synthetic(root: str | os.PathLike, prefix: str = "distill_synthetic") -> list[str]:
    from .datasets import synthetic_dataset

    root = Path(root)
    names = []
    for split in ("train", "val"):
        register(f"{prefix}_{split}", lambda s=split: synthetic_dataset(root, s, "coco"))
        register(f"{prefix}_lvis_{split}", lambda s=split: synthetic_dataset(root, s, "lvis"))
        names += [f"{prefix}_{split}", f"{prefix}_lvis_{split}"]
    return names


def register_ov_coco(datasets_root: str | os.PathLike, prefix: str = "distill_ov_coco") -> list[str]:
    coco = Path(datasets_root) / "coco"
    files = {
        "train": ("instances_train2017_base.json", "train2017"),
        "val": ("instances_val2017_ov.json", "val2017"),
    }
    for split, (ann, images) in files.items():
        register(
            f"{prefix}_{split}",
            lambda a=ann, i=images: load_coco_json(coco / "annotations" / "ov_coco" / a, coco / i),
        )
    return [f"{prefix}_{s}" for s in files]


def register_ov_lvis(datasets_root: str | os.PathLike, prefix: str = "distill_ov_lvis") -> list[str]:
    root = Path(datasets_root)
    files = {"train": "lvis_v1_train_norare.json", "val": "lvis_v1_val_ov.json"}
    for split, ann in files.items():
        # LVIS names images by coco_url (.../train2017/x.jpg) under the COCO folder
        register(
            f"{prefix}_{split}", lambda a=ann: load_lvis_json(root / "lvis" / "ov_lvis" / a, root / "coco")
        )
    return [f"{prefix}_{s}" for s in files]


def datasets_root_arg(arg: str | None) -> Path:
    """A --datasets-root argument, else $DISTILL_DATASETS, else ./datasets."""
    return Path(arg or os.environ.get("DISTILL_DATASETS") or "datasets")


def datasets_root(cfg) -> str:
    """DATASETS.ROOT, else $DISTILL_DATASETS, else ./datasets."""
    return cfg.DATASETS.ROOT or os.environ.get("DISTILL_DATASETS") or "datasets"


def register_all(root: str | os.PathLike) -> list[str]:
    """The synthetic benchmark (root/synthetic), OV-COCO and OV-LVIS under one datasets root."""
    return (
        register_synthetic(os.path.join(root, "synthetic")) + register_ov_coco(root) + register_ov_lvis(root)
    )
