"""The synthetic open-vocabulary benchmark: coloured shapes on textured backgrounds, in COCO / LVIS json.

Novel shapes appear in training images but are never annotated there (`instances_train.json` holds base
annotations only); `instances_val.json` holds all. Captions (``captions_train.json``) name every object,
novel ones included: they are what a teacher may learn from, the way CLIP saw the world.

Layout written under ``out_dir``::

    images/{train,val}/000001.png        RGB images
    sem_seg/{train,val}/000001.png       uint8 labels: 0 background, category id, 255 ignore (edges)
    annotations/instances_{train,val}.json       COCO format (RLE masks; categories carry "split")
    annotations/lvis_{train,val}.json            LVIS format (frequency, neg / not-exhaustive ids)
    annotations/captions_{train,val}.json        one caption per object, with its box
    meta.json                                    base / novel ids, semantic label map, generator config

Same config gives byte-identical files (seeded per image, sorted json, lossless PNG).

Two worlds share this writer: `SyntheticConfig` writes the quickstart's (15 shapes, below), and
`distill.data.synthetic_methods.MethodsWorldConfig` the method benchmark's (79 patterned shapes with a long
tail, distractors and small objects; ``python -m distill.data.synthetic DIR --world methods``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from ..utils.errors import cli_entry
from ..utils.io import atomic_write_json, chmod_default, dumps_json, read_json
from ..utils.progress import job_progress
from .synthetic_shapes import render_shape

GENERATOR_VERSION = 1
META_NAME = "synthetic-ov"  # meta.json's "name": how an image is known to come from this world
SEM_SEG_IGNORE = 255
SEM_SEG_BACKGROUND = 0
VAL_ID_OFFSET = 10_000_000

# (id, name, split, relative frequency). Ids are the category ids in every json and the semantic labels.
_CATEGORY_TABLE = (
    (1, "circle", "base", 1.5),
    (2, "square", "base", 1.4),
    (3, "triangle", "base", 1.3),
    (4, "diamond", "novel", 1.0),
    (5, "star", "base", 1.2),
    (6, "cross", "base", 1.1),
    (7, "crescent", "novel", 1.0),
    (8, "ring", "base", 1.0),
    (9, "heart", "base", 0.9),
    (10, "semicircle", "novel", 1.0),
    (11, "arrow", "base", 0.8),
    (12, "ellipse", "base", 0.7),
    (13, "trapezoid", "novel", 1.0),
    (14, "hexagon", "base", 0.6),
    (15, "chevron", "novel", 1.0),
)
SYNTHETIC_CATEGORIES = tuple({"id": i, "name": n, "split": s} for i, n, s, _ in _CATEGORY_TABLE)
BASE_CATEGORY_IDS = tuple(c["id"] for c in SYNTHETIC_CATEGORIES if c["split"] == "base")
NOVEL_CATEGORY_IDS = tuple(c["id"] for c in SYNTHETIC_CATEGORIES if c["split"] == "novel")

_COLORS = (
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 80, 220)),
    ("yellow", (235, 215, 40)),
    ("orange", (245, 140, 30)),
    ("purple", (150, 60, 190)),
    ("cyan", (40, 200, 210)),
    ("pink", (240, 120, 180)),
    ("white", (240, 240, 240)),
    ("black", (25, 25, 25)),
)
COLOUR_NAMES = tuple(n for n, _ in _COLORS)  # the only attribute words of the captions


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    num_train: int = 500
    num_val: int = 100
    image_size: int = 128
    min_objects: int = 2
    max_objects: int = 6
    min_object_frac: float = 0.16  # object size as a fraction of the image side
    max_object_frac: float = 0.42
    min_visible_frac: float = 0.5  # occlusion may hide at most half of an object

    def __post_init__(self):
        if not (1 <= self.min_objects <= self.max_objects):
            raise ValueError("need 1 <= min_objects <= max_objects")
        if self.image_size < 32 or self.num_train < 0 or self.num_val < 0:
            raise ValueError("image_size must be >= 32 and image counts >= 0")


# ---------------------------------------------------------------- shapes (unit coordinates, y down)
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float image: muted base colour, stripes or checks, noise."""
    base = rng.uniform(70, 170) + rng.uniform(-25, 25, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    if rng.random() < 0.5:
        tex = np.sin(2 * np.pi * u / period)
    else:
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        tex = np.sign(np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period))
    amp = rng.uniform(6, 22)
    img = base[None, None, :] + amp * tex[..., None] * rng.uniform(0.5, 1.0, size=3)
    return img + rng.normal(0, 5, size=(size, size, 3))


def _sample_category(rng: np.random.Generator) -> tuple[int, str]:
    w = np.array([f for *_, f in _CATEGORY_TABLE])
    i = int(rng.choice(len(_CATEGORY_TABLE), p=w / w.sum()))
    return _CATEGORY_TABLE[i][0], _CATEGORY_TABLE[i][1]


def _place_objects(rng: np.random.Generator, cfg: SyntheticConfig):
    """Sample objects back to front; reject a placement that hides too much of an earlier one."""
    size = cfg.image_size
    target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    objects: list[dict] = []  # each: cat_id, name, full mask, colour
    visible: list[np.ndarray] = []
    for _ in range(target * 25):
        if len(objects) == target:
            break
        cat_id, name = _sample_category(rng)
        half = 0.5 * size * rng.uniform(cfg.min_object_frac, cfg.max_object_frac)
        aspect = rng.uniform(0.85, 1.15)
        margin = half * max(aspect, 1.0) + 1
        cx, cy = rng.uniform(margin, size - margin, size=2)
        angle = np.deg2rad(rng.uniform(-20, 20))
        full = render_shape(name, size, cx, cy, half, angle, aspect)
        if full.sum() < 40:
            continue
        new_vis = [v & ~full for v in visible]
        if any(nv.sum() < cfg.min_visible_frac * o["full"].sum() for nv, o in zip(new_vis, objects)):
            continue
        color_name, rgb = _COLORS[int(rng.integers(len(_COLORS)))]
        objects.append({"category_id": cat_id, "name": name, "full": full, "color": color_name, "rgb": rgb})
        visible = new_vis + [full.copy()]
    for o, v in zip(objects, visible):
        o["visible"] = v
    return objects


def _render_image(rng: np.random.Generator, cfg: SyntheticConfig):
    """Returns (uint8 image (H, W, 3) RGB, objects with visible masks, semantic labels (H, W) uint8)."""
    size = cfg.image_size
    objects = _place_objects(rng, cfg)
    img = _background(rng, size)
    sem = np.full((size, size), SEM_SEG_BACKGROUND, np.uint8)
    for o in objects:
        rgb = np.clip(np.array(o["rgb"], np.float64) + rng.uniform(-15, 15, size=3), 0, 255)
        shade = rgb[None, None, :] + rng.normal(0, 6, size=(size, size, 3))
        img[o["full"]] = shade[o["full"]]
        sem[o["full"]] = o["category_id"]
    # void band on label edges, as in VOC: the boundary pixel's class is ambiguous
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(sem, kernel) != cv2.erode(sem, kernel)
    sem[edge] = SEM_SEG_IGNORE
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects, sem


def _encode_mask(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _image_seed(cfg, split: str, index: int, world_key: tuple = ()) -> np.random.Generator:
    """One image's generator; `world_key` (empty for this world) keeps other worlds' images apart."""
    split_key = {"train": 0, "val": 1}[split]
    return np.random.default_rng(
        np.random.SeedSequence([cfg.seed, split_key, index, GENERATOR_VERSION, *world_key])
    )


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _caption(o: dict) -> str:
    return f"{_article(o['color'])} {o['color']} {o['name']}"


@dataclass(frozen=True)
class World:
    """What tells one synthetic world from another; the writer below is shared. `render(rng, cfg, split)`
    returns (uint8 image (H, W, 3) RGB, objects with "category_id", "name", "color", "visible", semantic
    labels (H, W) uint8); `frequency(categories, image_counts, num_train)` gives LVIS's r / c / f per id."""

    categories: tuple
    render: object
    caption: object
    frequency: object
    supercategory: str = "shape"
    world_key: tuple = ()
    meta: tuple = ()  # extra (key, value) pairs of meta.json


def _generate_split(root: Path, split: str, cfg, progress: bool, world: World | None = None):
    world = world or QUICKSTART_WORLD
    n = cfg.num_train if split == "train" else cfg.num_val
    offset = 0 if split == "train" else VAL_ID_OFFSET
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "sem_seg" / split).mkdir(parents=True, exist_ok=True)
    images, anns, captions = [], [], []
    for i in job_progress(range(n), progress, desc=f"synthetic {split}", unit="img"):
        image_id = offset + i + 1
        name = f"{i + 1:06d}.png"
        img, objects, sem = world.render(_image_seed(cfg, split, i, world.world_key), cfg, split)
        _write_png(root / "images" / split / name, img[:, :, ::-1])
        _write_png(root / "sem_seg" / split / name, sem)
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": cfg.image_size,
                "width": cfg.image_size,
                "sem_seg_file_name": name,
                "coco_url": f"synthetic/{split}/{name}",
            }
        )
        for o in objects:
            rle = _encode_mask(o["visible"])
            bbox = [float(x) for x in mask_utils.toBbox(rle)]
            caption = world.caption(o)
            anns.append(
                {
                    "image_id": image_id,
                    "category_id": o["category_id"],
                    "bbox": bbox,
                    "area": float(o["visible"].sum()),
                    "segmentation": rle,
                    "iscrowd": 0,
                    "color": o["color"],
                    "caption": caption,
                }
            )
            captions.append(
                {"image_id": image_id, "caption": caption, "bbox": bbox, "category_id": o["category_id"]}
            )
    for k, a in enumerate(anns):
        a["id"] = offset + k + 1
    for k, c in enumerate(captions):
        c["id"] = offset + k + 1
    return images, anns, captions


def _median_frequency(categories, image_counts: dict, num_train: int) -> dict:
    """Novel = rare; base split into frequent / common at the median image count."""
    base_counts = sorted(image_counts[c["id"]] for c in categories if c["split"] == "base")
    median = base_counts[len(base_counts) // 2] if base_counts else 0
    return {
        c["id"]: "r" if c["split"] == "novel" else ("f" if image_counts[c["id"]] >= median else "c")
        for c in categories
    }


def _lvis_categories(train_anns: list[dict], world: World | None = None, num_train: int = 0) -> list[dict]:
    """LVIS-style categories, the frequency by the world's rule on training image counts."""
    world = world or QUICKSTART_WORLD
    img_sets: dict[int, set] = {c["id"]: set() for c in world.categories}
    counts = {c["id"]: 0 for c in world.categories}
    for a in train_anns:
        img_sets[a["category_id"]].add(a["image_id"])
        counts[a["category_id"]] += 1
    freqs = world.frequency(world.categories, {k: len(v) for k, v in img_sets.items()}, num_train)
    cats = []
    for c in world.categories:
        n_img = len(img_sets[c["id"]])
        cats.append(
            {
                **c,
                "frequency": freqs[c["id"]],
                "synset": f"{c['name']}.n.01",
                "synonyms": [c["name"]],
                "def": f"a {c['name']} shape",
                "image_count": n_img,
                "instance_count": counts[c["id"]],
            }
        )
    return cats


def _lvis_images(images: list[dict], anns: list[dict], categories=None) -> list[dict]:
    """Every category is exhaustively labelled, so absent categories are verified negatives."""
    present: dict[int, set] = {im["id"]: set() for im in images}
    for a in anns:
        present[a["image_id"]].add(a["category_id"])
    all_ids = {c["id"] for c in (categories or SYNTHETIC_CATEGORIES)}
    return [
        {**im, "neg_category_ids": sorted(all_ids - present[im["id"]]), "not_exhaustive_category_ids": []}
        for im in images
    ]


QUICKSTART_WORLD = World(
    SYNTHETIC_CATEGORIES, lambda rng, cfg, split: _render_image(rng, cfg), _caption, _median_frequency
)


def world_of(cfg) -> World:
    """The world a config generates: `SyntheticConfig` the quickstart's, `MethodsWorldConfig` the method
    benchmark's (distill.data.synthetic_methods)."""
    if isinstance(cfg, SyntheticConfig):
        return QUICKSTART_WORLD
    from .synthetic_methods import METHODS_WORLD, MethodsWorldConfig

    if isinstance(cfg, MethodsWorldConfig):
        return METHODS_WORLD
    raise TypeError(f"not a synthetic world config: {type(cfg).__name__}")


def _write_dataset(root: Path, cfg, progress: bool, world: World | None = None) -> None:
    world = world or QUICKSTART_WORLD
    cats_all = world.categories
    base_ids = tuple(c["id"] for c in cats_all if c["split"] == "base")
    info = {
        "description": "distill synthetic open-vocabulary benchmark",
        "version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
    }
    train_imgs, train_anns, train_caps = _generate_split(root, "train", cfg, progress, world)
    val_imgs, val_anns, val_caps = _generate_split(root, "val", cfg, progress, world)
    sup = world.supercategory
    cats = [dict(c, supercategory=sup) for c in cats_all]
    lvis_cats = [dict(c, supercategory=sup) for c in _lvis_categories(train_anns, world, cfg.num_train)]
    base_train = [a for a in train_anns if a["category_id"] in base_ids]
    ann_dir = root / "annotations"
    files = {
        "instances_train.json": {
            "info": info,
            "images": train_imgs,
            "annotations": base_train,
            "categories": cats,
        },
        "instances_val.json": {"info": info, "images": val_imgs, "annotations": val_anns, "categories": cats},
        # LVIS training drops rare (= novel) annotations, exactly like the COCO-format train file.
        "lvis_train.json": {
            "info": info,
            "images": _lvis_images(train_imgs, train_anns, cats_all),
            "annotations": base_train,
            "categories": lvis_cats,
        },
        "lvis_val.json": {
            "info": info,
            "images": _lvis_images(val_imgs, val_anns, cats_all),
            "annotations": val_anns,
            "categories": lvis_cats,
        },
        "captions_train.json": {"info": info, "images": train_imgs, "annotations": train_caps},
        "captions_val.json": {"info": info, "images": val_imgs, "annotations": val_caps},
    }
    for name, obj in files.items():
        atomic_write_json(ann_dir / name, obj)
    meta = {
        "name": META_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        **dict(world.meta),
        "categories": list(cats_all),
        "base_category_ids": list(base_ids),
        "novel_category_ids": [c["id"] for c in cats_all if c["split"] == "novel"],
        "semantic": {
            "background": SEM_SEG_BACKGROUND,
            "ignore": SEM_SEG_IGNORE,
            "labels": "pixel value = category id; 0 background; 255 ignore (object edges)",
        },
        "splits": {
            s: {
                "image_root": f"images/{s}",
                "sem_seg_root": f"sem_seg/{s}",
                "instances": f"annotations/instances_{s}.json",
                "lvis": f"annotations/lvis_{s}.json",
                "captions": f"annotations/captions_{s}.json",
            }
            for s in ("train", "val")
        },
    }
    atomic_write_json(root / "meta.json", meta, indent=2)


def generate(
    out_dir: str | os.PathLike,
    config=None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the benchmark to `out_dir` (built in a temporary folder, then renamed into place).

    An existing complete benchmark made with the same config is kept (returned as is); one made with
    another config raises unless `overwrite`.
    """
    cfg = config or SyntheticConfig()
    world = world_of(cfg)
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        same = (
            meta.get("config") == dataclasses.asdict(cfg)
            and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("world") == dict(world.meta).get("world")
        )
        if same and not overwrite:
            return out
        if not overwrite:
            raise FileExistsError(
                f"{out} holds a synthetic benchmark made with another config; pass overwrite=True"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not a synthetic benchmark; choose an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        chmod_default(tmp, directory=True)  # mkdtemp's 0700 would survive the os.replace
        _write_dataset(tmp, cfg, progress, world)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@functools.lru_cache(maxsize=256)
def _is_synthetic_root(folder: str) -> bool:
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("name") == META_NAME


def synthetic_root_of(image: str | os.PathLike) -> Path | None:
    """The synthetic world (benchmark or teacher corpus) an image file belongs to, or None: its meta.json sits
    in one of the image's three nearest parent folders (root/images/<split>/<file>)."""
    for folder in list(Path(image).resolve().parents)[:3]:
        if _is_synthetic_root(str(folder)):
            return folder
    return None


def load_meta(root: str | os.PathLike) -> dict:
    """The benchmark's meta.json (base / novel ids, file layout)."""
    return read_json(Path(root) / "meta.json", what="synthetic benchmark meta.json")


def world_config_class(world: str) -> type:
    """The config class of a world named on the command line ("quickstart" or "methods")."""
    if world == "quickstart":
        return SyntheticConfig
    from .synthetic_methods import MethodsWorldConfig

    return MethodsWorldConfig


@cli_entry
def main(argv=None) -> int:
    from ..utils.cli import ToolParser, parse_args
    from .synthetic_methods import MethodsWorldConfig

    p = ToolParser(description="Write the synthetic open-vocabulary benchmark.")
    p.add_argument("out_dir", help="folder to write the benchmark into")
    p.add_argument(
        "--world",
        choices=("quickstart", "methods"),
        default="quickstart",
        help="quickstart: 15 shapes (the quickstart's); methods: 79 patterned shapes with a long tail, "
        "distractors and small objects (benchmarks/methods.py)",
    )
    classes = (SyntheticConfig, MethodsWorldConfig)
    fields = {f.name: f for c in classes for f in dataclasses.fields(c)}
    for f in fields.values():
        defaults = ", ".join(
            f"{c.__name__}.{f.name} = {d.default}"
            for c in classes
            for d in dataclasses.fields(c)
            if d.name == f.name
        )
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(f.default),
            default=None,
            help=f"default: {defaults}",
        )
    p.add_argument("--overwrite", action="store_true", help="replace a benchmark made with another config")
    args = parse_args(p, argv)
    cls = world_config_class(args.world)
    own = {f.name for f in dataclasses.fields(cls)}
    given = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    if set(given) - own:
        p.error(f"--{sorted(set(given) - own)[0].replace('_', '-')} is no option of the {args.world} world")
    try:
        cfg = cls(**given)
    except ValueError as e:
        p.error(str(e))
    out = generate(args.out_dir, cfg, overwrite=args.overwrite)
    cats = world_of(cfg).categories
    print(
        dumps_json(
            {
                "out_dir": str(out),
                "base": [c["id"] for c in cats if c["split"] == "base"],
                "novel": [c["id"] for c in cats if c["split"] == "novel"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
