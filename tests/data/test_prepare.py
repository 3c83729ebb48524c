import json
import os
import subprocess
import sys

import pytest

from distill.data import ov_coco_categories
from distill.data.prepare import make_ov_coco, make_ov_lvis
from distill.utils import DistillInputError
from tests.conftest import REPO, load

OTHER = [{"id": 10, "name": "traffic light"}, {"id": 88, "name": "teddy bear"}]


def _fake_coco():
    cats = [{"id": c["id"], "name": c["name"], "supercategory": "x"} for c in ov_coco_categories()] + OTHER
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 10, "width": 10} for i in (1, 2, 3)]
    anns, k = [], 0
    for im, cid in [(1, 1), (1, 5), (2, 17), (2, 10), (3, 88), (3, 90), (3, 6)]:
        k += 1
        anns.append(
            {"id": k, "image_id": im, "category_id": cid, "bbox": [1, 1, 3, 3], "area": 9, "iscrowd": 0}
        )
    return {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}


def test_make_ov_coco():
    train = make_ov_coco(_fake_coco(), train=True)
    val = make_ov_coco(_fake_coco(), train=False)
    assert len(train["categories"]) == len(val["categories"]) == 65
    assert sorted(a["category_id"] for a in train["annotations"]) == [1, 90]
    assert sorted(a["category_id"] for a in val["annotations"]) == [1, 5, 6, 17, 90]
    assert len(train["images"]) == len(val["images"]) == 3
    assert {c["split"] for c in val["categories"]} == {"base", "novel"}


def test_make_ov_coco_rejects_non_coco():
    data = _fake_coco()
    data["categories"][0]["name"] = "giraffe"
    with pytest.raises(DistillInputError, match="expected 'person'"):
        make_ov_coco(data, train=True)


def test_make_ov_lvis(synthetic_root):
    val = load(synthetic_root / "annotations/lvis_val.json")
    train = make_ov_lvis(val, train=True)
    rare = {c["id"] for c in val["categories"] if c["frequency"] == "r"}
    assert not {a["category_id"] for a in train["annotations"]} & rare
    assert len(train["images"]) == len(val["images"])
    same = make_ov_lvis(val, train=False)
    assert len(same["annotations"]) == len(val["annotations"])
    assert {c["id"] for c in same["categories"] if c["split"] == "novel"} == rare


def _run(tool, root):
    env = {**os.environ, "DISTILL_DATASETS": str(root)}
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool)], env=env, capture_output=True, text=True
    )


def test_prepare_ov_coco_tool(tmp_path):
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir(parents=True)
    r = _run("prepare_ov_coco.py", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "instances_train2017.json" in r.stderr
    for name in ("instances_train2017.json", "instances_val2017.json"):
        (ann / name).write_text(json.dumps(_fake_coco()))
    r = _run("prepare_ov_coco.py", tmp_path)
    assert r.returncode == 0, r.stderr
    out = load(ann / "ov_coco" / "instances_train2017_base.json")
    assert sorted(a["category_id"] for a in out["annotations"]) == [1, 90]
    assert [p.name for p in (ann / "ov_coco").iterdir()] != []
    assert not list((ann / "ov_coco").glob("*.partial"))


def test_prepare_ov_lvis_tool(tmp_path, synthetic_root):
    root = tmp_path / "lvis"
    root.mkdir()
    (root / "lvis_v1_train.json").write_text((synthetic_root / "annotations/lvis_val.json").read_text())
    r = _run("prepare_ov_lvis.py", tmp_path)
    assert r.returncode == 2 and "lvis_v1_val.json" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "ov_lvis" / "lvis_v1_val_ov.json").exists()
    (root / "lvis_v1_val.json").write_text("[1, 2")
    r = _run("prepare_ov_lvis.py", tmp_path)
    assert r.returncode == 2 and "not valid json" in r.stderr
