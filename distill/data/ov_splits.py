"""Open-vocabulary category splits, kept as data.

- OV-COCO: 48 base / 17 novel of 65 COCO categories (Bansal et al.; OVR-CNN, ViLD, Detic), in
  ``splits/ov_coco.json``.
- OV-LVIS: rare categories (``frequency == "r"``) are novel, common + frequent are base.
- Any json whose categories carry ``"split": "base" | "novel"`` (the synthetic benchmark and the files the
  prepare tools write) names its own split.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

from ..utils.errors import DistillInputError


@dataclass(frozen=True)
class CategorySplit:
    """Dataset category ids of each group. `source` says where the split came from."""

    base: tuple[int, ...]
    novel: tuple[int, ...]
    source: str

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(sorted(self.base + self.novel))

    def groups(self) -> dict[str, tuple[int, ...]]:
        return {"base": self.base, "novel": self.novel}


@functools.lru_cache(maxsize=None)
def _load_split_file(name: str) -> dict:
    with resources.files("distill.data").joinpath("splits", f"{name}.json").open("r") as f:
        return json.load(f)


def ov_coco_categories() -> list[dict]:
    """The 65 OV-COCO categories: dicts with COCO `id`, `name` and `split` ("base" / "novel")."""
    return [dict(c) for c in _load_split_file("ov_coco")["categories"]]


def ov_coco_split() -> CategorySplit:
    cats = ov_coco_categories()
    return CategorySplit(
        base=tuple(c["id"] for c in cats if c["split"] == "base"),
        novel=tuple(c["id"] for c in cats if c["split"] == "novel"),
        source="ov-coco (48 base / 17 novel)",
    )


def ov_lvis_split(categories: Iterable[dict]) -> CategorySplit:
    """LVIS categories (with `frequency`) → base = common + frequent, novel = rare."""
    cats = list(categories)
    missing = [c.get("id") for c in cats if c.get("frequency") not in ("r", "c", "f")]
    if missing:
        raise DistillInputError(f"LVIS categories without a valid 'frequency' field, e.g. id {missing[0]}")
    return CategorySplit(
        base=tuple(sorted(c["id"] for c in cats if c["frequency"] != "r")),
        novel=tuple(sorted(c["id"] for c in cats if c["frequency"] == "r")),
        source="ov-lvis (novel = rare)",
    )


def split_from_categories(categories: Sequence[dict]) -> CategorySplit | None:
    """The split a category list names itself, else the known OV-COCO / LVIS split, else None.

    Order: an explicit `split` field on every category; the OV-COCO id set; LVIS `frequency`.
    """
    cats = list(categories)
    if cats and all("split" in c for c in cats):
        bad = [c["id"] for c in cats if c["split"] not in ("base", "novel")]
        if bad:
            raise DistillInputError(
                f"category {bad[0]} has split {cats[0]['split']!r}; expected base or novel"
            )
        return CategorySplit(
            base=tuple(sorted(c["id"] for c in cats if c["split"] == "base")),
            novel=tuple(sorted(c["id"] for c in cats if c["split"] == "novel")),
            source="category 'split' fields",
        )
    ids = {c["id"] for c in cats}
    if ids == set(ov_coco_split().all):
        return ov_coco_split()
    if cats and all("frequency" in c for c in cats):
        return ov_lvis_split(cats)
    return None
