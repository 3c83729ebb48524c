"""The method benchmark's world (distill.data.synthetic_methods) and the quickstart world left as it was."""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from distill.data.synthetic import SyntheticConfig, generate, main
from distill.data.synthetic_methods import (
    LONE_NOVEL_SHAPES,
    METHODS_CATEGORIES,
    TRAIN_WEIGHTS,
    MethodsWorldConfig,
)
from tests.conftest import load

TINY = dict(seed=5, num_train=16, num_val=8, image_size=96)
BASE = {c["id"] for c in METHODS_CATEGORIES if c["split"] == "base"}
NOVEL = {c["id"] for c in METHODS_CATEGORIES if c["split"] == "novel"}

# sha256 over (relative path, sha256 of the bytes) of every file of
# generate(out, SyntheticConfig(seed=3, num_train=4, num_val=3, image_size=64)), computed with the generator as
# it was before the method benchmark's world was added: the quickstart world must stay byte-identical.
QUICKSTART_WORLD_DIGEST = "e050edee3e8ea41e6d0017d2891abdac4ca39f9836707eda1bd570f4ec47dd1b"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("methods") / "w", MethodsWorldConfig(**TINY), progress=False)


def test_quickstart_world_is_byte_identical(tmp_path):
    cfg = SyntheticConfig(seed=3, num_train=4, num_val=3, image_size=64)
    assert _digest(generate(tmp_path / "q", cfg, progress=False)) == QUICKSTART_WORLD_DIGEST


def test_vocabulary_shares_words_like_a_real_one():
    names = {c["id"]: c["name"] for c in METHODS_CATEGORIES}
    assert len(names) >= 60 and len(NOVEL) >= 15 and len(set(names.values())) == len(names)
    base_words = [set(names[i].split()) for i in BASE]
    lone = 0
    for i in NOVEL:
        words = names[i].split()
        if len(words) == 1:
            assert not any(words[0] in b for b in base_words)
            lone += 1
            continue
        pattern, shape = words
        assert sum(pattern in b for b in base_words) >= 4 and sum(shape in b for b in base_words) >= 2
    assert lone == len(LONE_NOVEL_SHAPES) >= 2
    # novel = rare: every novel class is sampled less often than any base one
    assert max(TRAIN_WEIGHTS[i] for i in NOVEL) < min(TRAIN_WEIGHTS[i] for i in BASE)


def test_same_config_same_bytes_other_seed_other_images(world, tmp_path):
    assert _digest(generate(tmp_path / "a", MethodsWorldConfig(**TINY), progress=False)) == _digest(world)
    other = generate(tmp_path / "b", MethodsWorldConfig(**{**TINY, "seed": 6}), progress=False)
    assert (other / "images/val/000001.png").read_bytes() != (world / "images/val/000001.png").read_bytes()
    meta = load(world / "meta.json")
    assert meta["world"] == "methods" and set(meta["novel_category_ids"]) == NOVEL


def test_novel_annotations_never_reach_training(world):
    for name in ("instances_train.json", "lvis_train.json"):
        anns = load(world / "annotations" / name)["annotations"]
        assert anns and {a["category_id"] for a in anns} <= BASE
    caps = load(world / "annotations/captions_train.json")["annotations"]
    assert {c["category_id"] for c in caps} & NOVEL  # in the images and captions, only unannotated
    val = load(world / "annotations/lvis_val.json")
    assert {a["category_id"] for a in val["annotations"]} & NOVEL
    assert (
        len(val["images"]) == TINY["num_val"]
        and len(load(world / "annotations/instances_train.json")["images"]) == TINY["num_train"]
    )


def test_masks_are_visible_parts_and_small_objects_exist(world):
    val = load(world / "annotations/instances_val.json")
    by_image = {}
    for a in val["annotations"]:
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        assert m.sum() == a["area"] > 0
        by_image.setdefault(a["image_id"], []).append(m)
    for masks in by_image.values():  # occluded parts are cut: visible masks never overlap
        assert np.stack(masks).sum(0).max() <= 1
    areas = [a["area"] for a in val["annotations"]]
    assert min(areas) < 0.01 * TINY["image_size"] ** 2 < max(areas)
    assert {a["caption"].split()[-1] for a in val["annotations"]} <= {
        c["name"].split()[-1] for c in METHODS_CATEGORIES
    }


def test_long_tail_frequencies_by_image_count(tmp_path):
    root = generate(
        tmp_path / "tail", MethodsWorldConfig(seed=1, num_train=240, num_val=0, image_size=64), progress=False
    )
    cats = {c["id"]: c for c in load(root / "annotations/lvis_train.json")["categories"]}
    freq = Counter(c["frequency"] for c in cats.values())
    assert freq["r"] == len(NOVEL) and freq["f"] >= 10 and freq["c"] >= 10
    assert all(cats[i]["frequency"] == "r" for i in NOVEL)
    count = {f: [c["image_count"] for c in cats.values() if c["frequency"] == f] for f in "rcf"}
    assert max(count["r"]) < min(count["f"]) and np.mean(count["r"]) < np.mean(count["c"]) < np.mean(
        count["f"]
    )


def test_command_line_writes_the_methods_world(tmp_path, capsys):
    assert main([str(tmp_path / "m"), "--world", "methods", "--num-train", "2", "--num-val", "1"]) == 0
    assert load(tmp_path / "m" / "meta.json")["world"] == "methods"
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "q"), "--max-distractors", "1"])  # the quickstart world has none
    assert e.value.code == 2
