"""tools/demo.py honours the config it is given: TEST.AUG for segmentation."""

import runpy

import cv2
import numpy as np
import torch

from tests.conftest import REPO


def test_semseg_demo_honours_test_aug_enabled_false(tmp_path, monkeypatch):
    import distill.integrations.torchvision.sem_seg as sem_seg
    import distill.teacher as teacher

    calls = []

    def fake_segment(weights, images, vocab, teacher=None, templates="vild", flip_test=None):
        calls.append(flip_test)
        names = getattr(vocab, "class_names", vocab)
        return [torch.zeros(im.shape[1:], dtype=torch.int64) for im in images], ["background", *names]

    monkeypatch.setattr(sem_seg, "segment_images", fake_segment)
    monkeypatch.setattr(teacher, "create_teacher", lambda *a, **k: object())
    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((32, 32, 3), 90, np.uint8))
    weights = tmp_path / "seg.pth"
    # a segmenter by its tensor names (the demo checks the kind); its weights are read by the faked segmenter only
    torch.save({"model": {"predictor.embed_head.proj.weight": torch.zeros(1)}}, weights)
    main = runpy.run_path(str(REPO / "tools/demo.py"))["main"]
    cfg = str(REPO / "configs/synthetic/semseg_r18_fpn_quick.yaml")  # its TEST.AUG.ENABLED is True
    argv = ["--task", "semseg", "--config-file", cfg, "--weights", str(weights), "--input", str(img)]
    assert main([*argv, "--output", str(tmp_path / "a"), "TEST.AUG.ENABLED", "False"]) == 0
    assert main([*argv, "--output", str(tmp_path / "b")]) == 0
    assert calls == [False, True]
