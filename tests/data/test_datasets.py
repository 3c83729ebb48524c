import json
import os

import pytest

from distill.data import (
    BOX_MODE_XYWH_ABS,
    filter_empty,
    load_coco_json,
    load_lvis_json,
    ov_coco_categories,
    ov_coco_split,
    split_from_categories,
    synthetic_dataset,
)
from distill.data.synthetic import BASE_CATEGORY_IDS, NOVEL_CATEGORY_IDS
from distill.utils import DistillInputError
from tests.conftest import SMALL, load

# The standard OV-COCO split (Bansal et al.; OVR-CNN, ViLD, Detic), written out independently of the data file.
NOVEL_NAMES = [
    "airplane",
    "bus",
    "cat",
    "dog",
    "cow",
    "elephant",
    "umbrella",
    "tie",
    "snowboard",
    "skateboard",
    "cup",
    "knife",
    "cake",
    "couch",
    "keyboard",
    "sink",
    "scissors",
]
NOVEL_IDS = [5, 6, 17, 18, 21, 22, 28, 32, 36, 41, 47, 49, 61, 63, 76, 81, 87]
DROPPED_IDS = [10, 11, 13, 14, 37, 39, 40, 43, 46, 58, 64, 67, 77, 88, 89]


def test_ov_coco_split_is_the_standard_one():
    split = ov_coco_split()
    assert len(split.base) == 48 and len(split.novel) == 17
    assert list(split.novel) == NOVEL_IDS
    cats = {c["id"]: c["name"] for c in ov_coco_categories()}
    assert [cats[i] for i in NOVEL_IDS] == NOVEL_NAMES
    coco_ids = set(range(1, 91)) - {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # the 80 COCO category ids
    assert set(split.all) | set(DROPPED_IDS) == coco_ids
    assert not set(split.all) & set(DROPPED_IDS)
    assert {1, 2, 3, 4, 7, 8, 9, 90} <= set(split.base)


def test_split_from_categories_sources():
    assert split_from_categories([{"id": i, "name": str(i)} for i in ov_coco_split().all]) == ov_coco_split()
    lv = split_from_categories(
        [
            {"id": 1, "name": "a", "frequency": "r"},
            {"id": 2, "name": "b", "frequency": "f"},
            {"id": 3, "name": "c", "frequency": "c"},
        ]
    )
    assert lv.novel == (1,) and lv.base == (2, 3)
    assert split_from_categories([{"id": 1, "name": "a"}]) is None


def test_synthetic_coco_dicts(synthetic_root):
    dicts, meta = synthetic_dataset(synthetic_root, "val")
    assert len(dicts) == SMALL["num_val"]
    d = dicts[0]
    assert set(d) >= {"file_name", "height", "width", "image_id", "annotations", "sem_seg_file_name"}
    assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
    a = d["annotations"][0]
    assert a["bbox_mode"] == BOX_MODE_XYWH_ABS and len(a["bbox"]) == 4
    assert 0 <= a["category_id"] < len(meta.thing_classes)
    assert "counts" in a["segmentation"]
    gt = load(synthetic_root / "annotations/instances_val.json")
    first = [x for x in gt["annotations"] if x["image_id"] == d["image_id"]][0]
    assert meta.category_ids[a["category_id"]] == first["category_id"]
    assert [meta.category_ids[i] for i in meta.contiguous_ids("novel")] == list(NOVEL_CATEGORY_IDS)
    assert [meta.category_ids[i] for i in meta.contiguous_ids("base")] == list(BASE_CATEGORY_IDS)


def test_synthetic_lvis_dicts_use_coco_url(synthetic_root):
    dicts, meta = synthetic_dataset(synthetic_root, "train", fmt="lvis")
    assert meta.evaluator_type == "lvis"
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    assert "neg_category_ids" in dicts[0] and "not_exhaustive_category_ids" in dicts[0]
    assert len(filter_empty(dicts)) <= len(dicts)


def _write(tmp_path, obj, name="bad.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


@pytest.mark.parametrize(
    "obj, message",
    [
        ("{not json", "not valid json"),
        ({"images": [], "annotations": []}, "missing field(s) 'categories'"),
        (
            {"images": [{"id": 1, "file_name": "a.png", "height": 4}], "annotations": [], "categories": []},
            "image (id 1) is missing field(s) 'width'",
        ),
        (
            {
                "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
                "categories": [{"id": 1, "name": "x"}],
                "annotations": [{"id": 7, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}],
            },
            "unknown image_id 2",
        ),
        (
            {
                "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
                "categories": [{"id": 1, "name": "x"}],
                "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}],
            },
            "unknown category_id 3",
        ),
    ],
)
def test_bad_json_gives_clear_error(tmp_path, obj, message):
    p = _write(tmp_path, obj)
    with pytest.raises(DistillInputError) as e:
        load_coco_json(p, tmp_path)
    assert message in str(e.value) and str(p) in str(e.value)


def test_missing_file_and_lvis_fields(tmp_path):
    with pytest.raises(DistillInputError, match="not found"):
        load_coco_json(tmp_path / "nope.json", tmp_path)
    p = _write(
        tmp_path,
        {
            "images": [{"id": 1, "coco_url": "x/train/1.png", "height": 4, "width": 4}],
            "annotations": [],
            "categories": [{"id": 1, "name": "x", "frequency": "r"}],
        },
    )
    with pytest.raises(DistillInputError, match="neg_category_ids"):
        load_lvis_json(p, tmp_path)
