"""tools/demo.py --zero-shot: the teacher alone on training-free proposals, end to end in-process, its output
read by tools/evaluate.py; flag errors are one line and exit 2."""

import json
import runpy
import shutil
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, load
from tests.teacher.conftest import tiny_weights  # noqa: F401  (fixture)
from tests.tools.test_hardening_cli import env  # noqa: F401  (fixture: a detector trained for 2 steps)

demo, evaluate = (
    SimpleNamespace(**runpy.run_path(str(REPO / "tools" / f"{n}.py"))) for n in ("demo", "evaluate")
)


@pytest.fixture
def one_image(synthetic_root, tmp_path, monkeypatch):
    """The first validation image in a folder of its own, and a private text-embedding cache."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    gt = load(synthetic_root / "annotations/instances_val.json")
    first = gt["images"][0]
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(synthetic_root / "images" / "val" / first["file_name"].split("/")[-1], d / "val.png")
    return d / "val.png", first


def test_zero_shot_demo_writes_drawn_images_and_predictions_evaluate_reads(
    one_image,
    synthetic_root,
    tmp_path,
    tiny_weights,  # noqa: F811
    capsys,
):
    image, info = one_image
    out = tmp_path / "out"
    argv = ["--zero-shot", "--teacher", "distill-tiny-vit", "--pretrained", str(tiny_weights)]
    argv += [
        "--vocabulary",
        "synthetic",
        "--input",
        str(image),
        "--output",
        str(out),
        "--score-thresh",
        "0.05",
    ]
    assert demo.main(argv) == 0, capsys.readouterr().err
    assert "detection(s) with score >= 0.05" in capsys.readouterr().out
    assert (out / "val.png").stat().st_size > 0
    preds = load(out / "predictions.json")
    assert [c["name"] for c in preds["categories"]][:3] == ["circle", "square", "triangle"]
    assert [(i["height"], i["width"]) for i in preds["images"]] == [(info["height"], info["width"])]
    anns = preds["annotations"]
    assert 1 <= len(anns) <= 100
    for a in anns:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= info["width"] + 0.01 and y + h <= info["height"] + 0.01
        assert 0 <= a["score"] <= 1 and 1 <= a["category_id"] <= len(preds["categories"])
    # deterministic: a second run writes the same predictions
    assert demo.main([*argv[:-4], "--output", str(tmp_path / "again"), "--score-thresh", "0.05"]) == 0
    assert load(tmp_path / "again" / "predictions.json")["annotations"] == anns
    # tools/evaluate.py scores it (dataset-style predictions matched by file name)
    gt = load(synthetic_root / "annotations/instances_val.json")
    one = {**gt, "images": [{**info, "file_name": "val.png"}]}
    one["annotations"] = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
    (tmp_path / "gt.json").write_text(json.dumps(one))
    metrics = tmp_path / "m.json"
    args = ["--gt", str(tmp_path / "gt.json"), "--predictions", str(out / "predictions.json")]
    assert evaluate.main([*args, "--output", str(metrics)]) == 0, capsys.readouterr().err
    assert 0 <= load(metrics)["AP50"] <= 100


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--zero-shot", "--proposals", "rpn"], "--proposals rpn needs --weights"),
        (["--zero-shot", "--weights", "x.pth"], "selective-search takes none"),
        (["--zero-shot", "--task", "semseg"], "--zero-shot detects"),
        (["--teacher", "RN50", "--weights", "x.pth"], "go with --zero-shot"),
        ([], "--weights is required"),
    ],
)
def test_zero_shot_flag_errors_are_one_line(one_image, tmp_path, capsys, extra, needle):
    image, _ = one_image
    assert demo.main([*extra, "--input", str(image), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_zero_shot_demo_on_a_trained_detectors_rpn_proposals(env, one_image, tmp_path, capsys):  # noqa: F811
    """--proposals rpn: the checkpoint's own config, its RPN's proposals (objectness in the score), the tiny
    teacher of that config scoring them."""
    image, info = one_image
    out = tmp_path / "rpn"
    argv = ["--zero-shot", "--proposals", "rpn", "--weights", str(env["weights"]), "--score-thresh", "0"]
    assert demo.main([*argv, "--input", str(image), "--output", str(out)]) == 0, capsys.readouterr().err
    anns = load(out / "predictions.json")["annotations"]
    assert anns and all(0 <= a["score"] <= 1 for a in anns)
    assert all(a["bbox"][0] + a["bbox"][2] <= info["width"] + 0.01 for a in anns)
