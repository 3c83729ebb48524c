"""The applications outside the Backend protocol (the web demo, ONNX export, `tools/demo.py --task semseg`) run
torchvision-backend models only: a detectron2 detector or segmenter checkpoint is one line saying so, before its
config (detectron2's keys) is read. Tools run in-process (main(argv)); no detectron2 is needed for the
checkpoints (their tensor names and metadata are what the tools read)."""

import runpy
import socket
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import REPO

tool = {
    n: SimpleNamespace(**runpy.run_path(str(REPO / "tools" / f"{n}.py")))
    for n in ("demo", "export_model", "web_demo")
}


@pytest.fixture(scope="module")
def d2_detector(tmp_path_factory):
    """A detectron2-backend detector checkpoint as its trainer writes one: detectron2 tensor names and the
    metadata with the backend and a detectron2 config (keys the torchvision config does not have)."""
    path = tmp_path_factory.mktemp("d2") / "detector.pth"
    state = {
        "proposal_generator.rpn_head.conv.weight": torch.zeros(1),
        "roi_heads.box_head.fc1.weight": torch.zeros(1),
    }
    meta = {"backend": "detectron2", "config": "CUDNN_BENCHMARK: false\nVERSION: 2\n"}
    torch.save({"model": state, "distill": meta, "iteration": 2}, path)
    return path


@pytest.fixture(scope="module")
def d2_segmenter(tmp_path_factory):
    """A detectron2 semantic segmentor's checkpoint (detectron2's checkpointer: no config carried)."""
    path = tmp_path_factory.mktemp("d2") / "segmenter.pth"
    state = {
        "sem_seg_head.predictor.embed_head.weight": torch.zeros(1),
        "backbone.fpn_lateral2.weight": torch.zeros(1),
    }
    torch.save({"model": state, "iteration": 2}, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(capsys, says: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "was trained with the detectron2 backend" in err and says in err, err


def test_detectron2_checkpoints_are_refused_in_one_line(
    d2_detector, d2_segmenter, synthetic_root, tmp_path, capsys
):
    image = str(synthetic_root / "images/val/000001.png")
    out = ["--output", str(tmp_path / "out")]
    for argv in ([], ["--config-file", str(REPO / "configs/synthetic/semseg_r18_fpn_quick.yaml")]):
        assert (
            tool["demo"].main(
                ["--task", "semseg", "--weights", str(d2_segmenter), "--input", image, *out, *argv]
            )
            == 2
        )
        _refused(capsys, "--task semseg runs torchvision-backend segmenters only")
    for task, weights in (("detect", d2_detector), ("semseg", d2_segmenter)):
        assert (
            tool["export_model"].main(
                ["--task", task, "--weights", str(weights), "--vocabulary", "star", *out]
            )
            == 2
        )
        _refused(capsys, "ONNX export is implemented for the torchvision backend only")
    for argv in (
        ["--weights", str(d2_detector), "--semseg-weights", ""],
        ["--weights", "", "--semseg-weights", str(d2_segmenter)],
    ):
        assert tool["web_demo"].main([*argv, "--port", str(_free_port())]) == 2
        _refused(capsys, "the web demo runs torchvision-backend models only")
