"""The method benchmark's synthetic world: a larger open vocabulary of patterned shapes, for ranking methods.

Written by `distill.data.synthetic.generate(out, MethodsWorldConfig(...))` in the quickstart world's layout and
formats (COCO / LVIS / captions json, semantic PNGs, meta.json with ``"world": "methods"``).

Vocabulary (79 classes): every fill pattern x shape of the quickstart's 15 shapes ("striped heart",
"dotted star", ...), 60 base and 15 novel, each novel one sharing its pattern word with 12 base classes and its
shape word with 4 (as "red bus" relates to "red car"); plus 4 novel shapes named by one word no base class has
("pentagon", "octagon", "kite", "bolt", drawn in any pattern). The pattern is drawn, not only named: solid,
striped, dotted, checkered or outlined fills, in one of the quickstart's 10 colours.

Long tail (LVIS-like, by training image count): 20 base classes are sampled often, 40 less often, the 19
novel ones rarely (and, as in the quickstart world, never annotated in training). LVIS's frequency of a base
class is "f" when its training image count is at least the mean of the base classes', else "c"; novel = "r".
Validation samples classes with the square root of the training weights, so that every class has instances
enough for its AP. Each image also holds 0-2 distractors (irregular blobs, in no vocabulary: unannotated,
uncaptioned, background in the semantic labels), objects occlude each other (the annotated masks are the
visible parts) and sizes are log-uniform from 7% to 45% of the image side (9 to 58 pixels at 128).

Captions name every vocabulary object, novel ones included ("a red striped heart").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic import _COLORS, SEM_SEG_BACKGROUND, SEM_SEG_IGNORE, World, _article, _background
from .synthetic_shapes import _SHAPES, render_parts

WORLD_NAME = "methods"
PATTERNS = ("solid", "striped", "dotted", "checkered", "outlined")
SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "crescent",
    "ring",
    "heart",
    "semicircle",
    "arrow",
    "ellipse",
    "trapezoid",
    "hexagon",
    "chevron",
)
LONE_NOVEL_SHAPES = ("pentagon", "octagon", "kite", "bolt")  # novel names sharing no word with a base one
FREQUENT_BASE, COMMON_BASE = 20, 40
RARE_WEIGHT = 0.06


def _build_categories():
    """(categories, training weights by id). Shape s's novel pattern is s mod 5: 3 novel classes a pattern."""
    cats = []
    for s, shape in enumerate(SHAPES):
        for k, pattern in enumerate(PATTERNS):
            split = "novel" if k == s % len(PATTERNS) else "base"
            cats.append({"id": len(cats) + 1, "name": f"{pattern} {shape}", "split": split})
    for shape in LONE_NOVEL_SHAPES:
        cats.append({"id": len(cats) + 1, "name": shape, "split": "novel"})
    base = [c["id"] for c in cats if c["split"] == "base"]
    order = np.random.default_rng(2024).permutation(base)  # which base classes are frequent: fixed, mixed
    weights = {c["id"]: RARE_WEIGHT for c in cats}
    for rank, cid in enumerate(order):
        if rank < FREQUENT_BASE:
            weights[int(cid)] = 2.0 - rank / (FREQUENT_BASE - 1)  # 2.0 .. 1.0
        else:
            weights[int(cid)] = 0.6 - 0.4 * (rank - FREQUENT_BASE) / (COMMON_BASE - 1)  # 0.6 .. 0.2
    return tuple(cats), weights


METHODS_CATEGORIES, TRAIN_WEIGHTS = _build_categories()
_IDS = np.array([c["id"] for c in METHODS_CATEGORIES])
_SAMPLING = {
    "train": np.array([TRAIN_WEIGHTS[i] for i in _IDS]),
    "val": np.sqrt([TRAIN_WEIGHTS[i] for i in _IDS]),
}
_SAMPLING = {k: v / v.sum() for k, v in _SAMPLING.items()}
_NAMES = {c["id"]: c["name"] for c in METHODS_CATEGORIES}
_PARTS = {c["id"]: c["name"].split()[-1] for c in METHODS_CATEGORIES}  # id -> shape
_PATTERN_OF = {c["id"]: (c["name"].split()[0] if " " in c["name"] else None) for c in METHODS_CATEGORIES}


@dataclass(frozen=True)
class MethodsWorldConfig:
    seed: int = 0
    num_train: int = 3000
    num_val: int = 1000
    image_size: int = 128
    min_objects: int = 3
    max_objects: int = 8
    max_distractors: int = 2
    min_object_frac: float = 0.07  # object size as a fraction of the image side, log-uniform
    max_object_frac: float = 0.45
    min_visible_frac: float = 0.4  # occlusion may hide at most 60% of an object

    def __post_init__(self):
        if not (1 <= self.min_objects <= self.max_objects) or self.max_distractors < 0:
            raise ValueError("need 1 <= min_objects <= max_objects and max_distractors >= 0")
        if self.image_size < 32 or self.num_train < 0 or self.num_val < 0:
            raise ValueError("image_size must be >= 32 and image counts >= 0")
        if not (0 < self.min_object_frac <= self.max_object_frac <= 0.9):
            raise ValueError("need 0 < min_object_frac <= max_object_frac <= 0.9")


def _blob(rng: np.random.Generator):
    """An irregular polygon of 5-9 vertices: a distractor's outline, in no vocabulary."""
    k = int(rng.integers(5, 10))
    t = np.sort(rng.uniform(0, 2 * np.pi, k))
    r = rng.uniform(0.45, 1.0, k)
    return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]


def _ink(rgb) -> np.ndarray:
    """The pattern's second colour: dark on a light colour, light on a dark one."""
    lum = 0.3 * rgb[0] + 0.59 * rgb[1] + 0.11 * rgb[2]
    return np.array((30.0, 30.0, 30.0) if lum > 128 else (235.0, 235.0, 235.0))


def _pattern_ink(pattern: str, full: np.ndarray, cx, cy, half, angle, yy, xx) -> np.ndarray:
    """(H, W) bool: the pixels of `full` drawn in the ink colour (the rest in the object's colour)."""
    period = float(np.clip(half / 1.5, 3.0, 10.0))
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    if pattern == "striped":
        ink = np.floor(u / (period / 2)) % 2 == 1
    elif pattern == "checkered":
        ink = (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 1
    elif pattern == "dotted":
        du, dv = u - period * np.round(u / period), v - period * np.round(v / period)
        ink = du * du + dv * dv <= (0.3 * period) ** 2
    elif pattern == "outlined":  # the colour on a border band; the inside in ink
        k = max(1, int(round(half * 0.25)))
        inner = cv2.erode(full.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)).astype(bool)
        ink = inner
    else:
        ink = np.zeros_like(full)
    return ink & full


def _place(rng: np.random.Generator, cfg: MethodsWorldConfig, split: str) -> list[dict]:
    """Objects and distractors back to front; a placement that hides too much of an earlier object is
    rejected. Each: category_id (0 for a distractor), name, full mask, visible mask, pattern, colour."""
    size = cfg.image_size
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    n_dis = int(rng.integers(0, cfg.max_distractors + 1))
    kinds = rng.permutation([1] * n_obj + [0] * n_dis)  # distractors among the objects, in depth order
    objects: list[dict] = []
    lo, hi = np.log(cfg.min_object_frac), np.log(cfg.max_object_frac)
    for kind in kinds:
        for _ in range(25):
            if kind:
                cid = int(rng.choice(_IDS, p=_SAMPLING[split]))
                parts, pattern, name = _SHAPES[_PARTS[cid]](), _PATTERN_OF[cid], _NAMES[cid]
            else:
                cid, parts, pattern, name = 0, _blob(rng), None, "distractor"
            pattern = pattern or PATTERNS[int(rng.integers(len(PATTERNS)))]
            half = 0.5 * size * float(np.exp(rng.uniform(lo, hi)))
            aspect = rng.uniform(0.85, 1.15)
            margin = half * max(aspect, 1.0) + 1
            cx, cy = rng.uniform(margin, size - margin, size=2)
            angle = np.deg2rad(rng.uniform(-25, 25))
            full = render_parts(parts, size, cx, cy, half, angle, aspect)
            if full.sum() < 12:
                continue
            new_vis = [o["visible"] & ~full for o in objects]
            if any(
                o["category_id"] and nv.sum() < cfg.min_visible_frac * o["full"].sum()
                for nv, o in zip(new_vis, objects)
            ):
                continue
            for o, nv in zip(objects, new_vis):
                o["visible"] = nv
            color, rgb = _COLORS[int(rng.integers(len(_COLORS)))]
            objects.append(
                {
                    "category_id": cid,
                    "name": name,
                    "full": full,
                    "visible": full.copy(),
                    "pattern": pattern,
                    "color": color,
                    "rgb": rgb,
                    "geometry": (cx, cy, half, angle),
                }
            )
            break
    return objects


def render_methods_image(rng: np.random.Generator, cfg: MethodsWorldConfig, split: str):
    """(uint8 image (H, W, 3) RGB, annotated objects (distractors left out), semantic labels (H, W) uint8)."""
    size = cfg.image_size
    objects = _place(rng, cfg, split)
    img = _background(rng, size)
    sem = np.full((size, size), SEM_SEG_BACKGROUND, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for o in objects:
        rgb = np.clip(np.array(o["rgb"], np.float64) + rng.uniform(-15, 15, size=3), 0, 255)
        ink = _pattern_ink(o["pattern"], o["full"], *o["geometry"], yy, xx)
        colour = np.where(ink[..., None], _ink(rgb)[None, None, :], rgb[None, None, :])
        shade = colour + rng.normal(0, 6, size=(size, size, 3))
        img[o["full"]] = shade[o["full"]]
        sem[o["full"]] = o["category_id"]  # a distractor is background: in no vocabulary
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(sem, kernel) != cv2.erode(sem, kernel)
    sem[edge] = SEM_SEG_IGNORE
    kept = [o for o in objects if o["category_id"] and o["visible"].any()]
    return np.clip(np.round(img), 0, 255).astype(np.uint8), kept, sem


def _caption(o: dict) -> str:
    return f"{_article(o['color'])} {o['color']} {o['name']}"


def _mean_frequency(categories, image_counts: dict, num_train: int) -> dict:
    """Novel = rare; a base class is frequent when its training image count is at least the base mean."""
    base = [image_counts[c["id"]] for c in categories if c["split"] == "base"]
    mean = sum(base) / max(len(base), 1)
    return {
        c["id"]: "r" if c["split"] == "novel" else ("f" if image_counts[c["id"]] >= mean else "c")
        for c in categories
    }


METHODS_WORLD = World(
    METHODS_CATEGORIES,
    render_methods_image,
    _caption,
    _mean_frequency,
    world_key=(2,),  # other images than the quickstart world's for the same seed
    meta=(("world", WORLD_NAME),),
)
