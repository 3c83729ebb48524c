import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, load
from tests.evaluation.test_detection import noisy_predictions

TOOL = str(REPO / "tools" / "evaluate.py")


def run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def files(synthetic_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    gt = synthetic_root / "annotations/instances_val.json"
    preds = d / "preds.json"
    preds.write_text(json.dumps(noisy_predictions(load(gt))))
    return gt, preds, d


@pytest.mark.parametrize("task, protocol", [("bbox", "coco"), ("segm", "lvis")])
def test_writes_flat_metrics(files, synthetic_root, task, protocol):
    gt, preds, d = files
    if protocol == "lvis":
        gt = synthetic_root / "annotations/lvis_val.json"
    out = d / f"m_{task}_{protocol}.json"
    r = run("--gt", gt, "--predictions", preds, "--task", task, "--protocol", protocol, "--output", out)
    assert r.returncode == 0, r.stderr
    m = load(out)
    assert all(not isinstance(v, (dict, list)) for v in m.values())
    assert {"AP", "AP50", "AP75", "AP50_novel", "AP50_base"} <= set(m)
    if protocol == "lvis":
        assert {"APr", "APc", "APf"} <= set(m)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == m


def _unknown_ids(preds, d):
    p = json.loads(preds.read_text())
    p[3]["category_id"] = 12345
    f = d / "unknown.json"
    f.write_text(json.dumps(p))
    return f


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_gt", "ground-truth file not found"),
        ("missing_pred", "predictions file not found"),
        ("empty", "no predictions"),
        ("unknown", "unknown category_id 12345"),
        ("gt_fields", "missing field(s) 'categories'"),
        ("nan_score", "prediction 3 has a score that is not a finite number: nan"),
        ("text_score", "prediction 3 has a score that is not a finite number: 'high'"),
        ("negative_box", "prediction 3 has a bbox of negative width or height"),
        ("inf_box", "prediction 3 has a bbox that is not [x, y, w, h] of finite numbers"),
        ("dataset_style_fields", "not a dataset-style predictions file"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(files, case, needle):
    gt, preds, d = files
    if case == "missing_gt":
        gt = d / "nope.json"
    elif case == "missing_pred":
        preds = d / "nope_preds.json"
    elif case == "empty":
        preds = d / "empty.json"
        preds.write_text("[]")
    elif case == "unknown":
        preds = _unknown_ids(preds, d)
    elif case in ("nan_score", "text_score", "negative_box", "inf_box"):
        p = json.loads(preds.read_text())
        if case.endswith("score"):
            p[3]["score"] = float("nan") if case == "nan_score" else "high"
        else:
            p[3]["bbox"][2] = -4.0 if case == "negative_box" else float("inf")
        preds = d / f"{case}.json"
        preds.write_text(json.dumps(p))
    elif case == "dataset_style_fields":
        preds = d / "dataset_style.json"
        preds.write_text(json.dumps({"images": [], "annotations": [{"category_id": 1}], "categories": []}))
    elif case == "gt_fields":
        gt = d / "gt_bad.json"
        gt.write_text(json.dumps({"images": [], "annotations": []}))
    out = d / f"out_{case}.json"
    r = run("--gt", gt, "--predictions", preds, "--output", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() and not list(d.glob("*.partial"))
