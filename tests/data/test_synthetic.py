import hashlib
from collections import Counter

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis import LVIS
from pycocotools.coco import COCO

from distill.data.synthetic import (
    BASE_CATEGORY_IDS,
    NOVEL_CATEGORY_IDS,
    SEM_SEG_IGNORE,
    SYNTHETIC_CATEGORIES,
    SyntheticConfig,
    generate,
)
from tests.conftest import SMALL, load


def _tree_digest(root):
    h = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_categories_and_split():
    assert len(SYNTHETIC_CATEGORIES) >= 12
    assert len({c["name"] for c in SYNTHETIC_CATEGORIES}) == len(SYNTHETIC_CATEGORIES)
    frac = len(BASE_CATEGORY_IDS) / len(SYNTHETIC_CATEGORIES)
    assert 0.6 <= frac <= 0.72
    assert not set(BASE_CATEGORY_IDS) & set(NOVEL_CATEGORY_IDS)


def test_same_seed_byte_identical_and_other_seed_differs(synthetic_root, tmp_path):
    again = generate(tmp_path / "again", SyntheticConfig(**SMALL), progress=False)
    assert _tree_digest(again) == _tree_digest(synthetic_root)
    other = generate(
        tmp_path / "other", SyntheticConfig(**{**SMALL, "seed": SMALL["seed"] + 1}), progress=False
    )
    a, b = _tree_digest(other), _tree_digest(synthetic_root)
    assert a.keys() == b.keys()
    assert a["images/train/000001.png"] != b["images/train/000001.png"]


def test_train_has_base_only_val_has_all(synthetic_root):
    train = load(synthetic_root / "annotations/instances_train.json")
    val = load(synthetic_root / "annotations/instances_val.json")
    assert {a["category_id"] for a in train["annotations"]} <= set(BASE_CATEGORY_IDS)
    assert {a["category_id"] for a in val["annotations"]} & set(NOVEL_CATEGORY_IDS)
    # novel objects are in the training images, only unannotated: the captions name them
    caps = load(synthetic_root / "annotations/captions_train.json")
    assert {c["category_id"] for c in caps["annotations"]} & set(NOVEL_CATEGORY_IDS)
    per_image = Counter(c["image_id"] for c in caps["annotations"])
    assert min(per_image.values()) >= 2 and max(per_image.values()) <= 6
    assert len(per_image) == SMALL["num_train"]
    assert all(c["split"] in ("base", "novel") for c in train["categories"])


def test_masks_boxes_and_semantic_labels_agree(synthetic_root):
    val = load(synthetic_root / "annotations/instances_val.json")
    anns = {}
    for a in val["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    occluded = 0
    for im in val["images"]:
        sem = cv2.imread(str(synthetic_root / "sem_seg/val" / im["sem_seg_file_name"]), cv2.IMREAD_UNCHANGED)
        assert sem.shape == (im["height"], im["width"]) and sem.dtype == np.uint8
        assert set(np.unique(sem)) <= {0, SEM_SEG_IGNORE} | {c["id"] for c in SYNTHETIC_CATEGORIES}
        for a in anns[im["id"]]:
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            assert m.sum() == a["area"]
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert set(np.unique(sem[m])) <= {a["category_id"], SEM_SEG_IGNORE}
            # the mask interior (away from the void band) carries the object's label
            assert (sem[m] == a["category_id"]).mean() > 0.3
        occluded += sum(
            len(set(np.unique(sem[mask_utils.decode(a["segmentation"]).astype(bool)]))) > 1
            for a in anns[im["id"]]
        )
    assert occluded > 0


def test_roundtrip_through_pycocotools_and_lvis(synthetic_root):
    for split in ("train", "val"):
        coco = COCO(str(synthetic_root / f"annotations/instances_{split}.json"))
        assert len(coco.getImgIds()) == SMALL[f"num_{split}"]
        lvis = LVIS(str(synthetic_root / f"annotations/lvis_{split}.json"))
        assert len(lvis.get_img_ids()) == SMALL[f"num_{split}"]
        for img in lvis.load_imgs(lvis.get_img_ids()):
            present = {a["category_id"] for a in lvis.img_ann_map[img["id"]]}
            assert not present & set(img["neg_category_ids"])
            assert img["not_exhaustive_category_ids"] == []
        ann = coco.loadAnns(coco.getAnnIds())[0]
        assert coco.annToMask(ann).sum() == ann["area"]
    cats = load(synthetic_root / "annotations/lvis_val.json")["categories"]
    freq = {c["id"]: c["frequency"] for c in cats}
    assert {freq[i] for i in NOVEL_CATEGORY_IDS} == {"r"}
    assert {freq[i] for i in BASE_CATEGORY_IDS} <= {"c", "f"}


def test_existing_output_kept_or_refused(synthetic_root, tmp_path):
    assert generate(synthetic_root, SyntheticConfig(**SMALL), progress=False) == synthetic_root
    with pytest.raises(FileExistsError):
        generate(synthetic_root, SyntheticConfig(**{**SMALL, "seed": 99}), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("user file")
    with pytest.raises(FileExistsError):
        generate(tmp_path / "busy", SyntheticConfig(**SMALL), progress=False)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import distill.data.synthetic as syn

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(syn, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(
            tmp_path / "bench", SyntheticConfig(**{**SMALL, "num_train": 2, "num_val": 1}), progress=False
        )
    assert list(tmp_path.iterdir()) == []
