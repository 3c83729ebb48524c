import json

import cv2
import numpy as np
import pytest
import torch

from distill.evaluation import SemSegEvaluator
from distill.utils import DistillInputError

SMALL = ["MODEL.DISTILL.SEM_SEG.DENSE_TARGETS", "windows", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.DISTILL.SEM_SEG.CONVS_DIM", "32", "SOLVER.IMS_PER_BATCH", "4",
         "MODEL.DISTILL.SEM_SEG.WINDOW_SIZES", "[48]", "MODEL.DISTILL.SEM_SEG.WINDOW_STRIDE", "24"]


@pytest.fixture(scope="module")
def rn_teacher():
    from distill.teacher import create_teacher

    torch.manual_seed(0)
    return create_teacher("distill-tiny-rn", None)  # random weights: the wiring, not the numbers


@pytest.fixture(scope="module")
def ablation(synthetic_root, rn_teacher, tmp_path_factory):
    from distill.integrations.torchvision.sem_seg import load_semseg_config, train_and_evaluate_segmenter

    out = tmp_path_factory.mktemp("semseg")
    cfg = load_semseg_config(SMALL)
    return out, train_and_evaluate_segmenter(synthetic_root, out, rn_teacher, cfg, max_iter=3, num_train=8,
                                             num_val=4, progress=False)


def test_ablation_rows_files_and_shared_cache(ablation, synthetic_root, rn_teacher):
    from distill.integrations.torchvision.sem_seg import format_table, write_metrics_line

    out, result = ablation
    assert list(result["rows"]) == ["CE only", "CE + pixel distillation"]
    for m in result["rows"].values():
        for k in ("mIoU", "mIoU_base", "mIoU_novel", "hIoU", "pACC"):
            assert m[k] is not None and 0 <= m[k] <= 100
    assert result["dense_targets"] == "windows" and result["num_train"] == 8
    assert (out / "ce_only" / "model_final.pth").is_file()
    assert (out / "ce_pixel_distillation" / "model_final.pth").is_file()
    assert json.loads((out / "metrics.json").read_text())["max_iter"] == 3
    cached = list((out / "dense_targets").glob("windows-*/*.pt"))
    assert len(cached) == 8  # computed once, for the distillation run only
    table = format_table(result["rows"])
    assert table.count("\n") == 3 and "mIoU novel" in table
    line = json.loads(write_metrics_line(result))
    assert set(line["CE only"]) >= {"mIoU_base", "mIoU_novel", "hIoU", "pACC"}


def test_evaluation_matches_direct_confusion_matrix(ablation, synthetic_root, rn_teacher):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import (
        _synthetic_vocab,
        evaluate_segmenter,
        load_segmenter,
        load_sem_seg_samples,
        predict_sem_seg,
        synthetic_evaluator,
    )

    out, result = ablation
    meta, all_vocab, _, all_ids, _ = _synthetic_vocab(synthetic_root, rn_teacher)
    model = load_segmenter(out / "ce_only" / "model_final.pth", rn_teacher.dim)
    model.predictor.set_vocabulary(all_vocab, all_ids)
    val = load_sem_seg_samples(synthetic_dataset(synthetic_root, "val")[0][:4], 16)
    m = evaluate_segmenter(model, val, synthetic_evaluator(meta))
    assert m["mIoU_novel"] == pytest.approx(result["rows"]["CE only"]["mIoU_novel"])  # the checkpoint round-trips
    preds = predict_sem_seg(model, [s["image"] for s in val])
    cm = np.zeros((16, 16), np.int64)
    for p, s in zip(preds, val):
        g = s["labels"].numpy()
        keep = g != 255
        np.add.at(cm, (g[keep], p.numpy()[keep]), 1)
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    present = (cm.sum(0) + cm.sum(1)) > 0
    novel = [c for c in meta.split.novel if present[c]]
    if novel:
        assert m["mIoU_novel"] == pytest.approx(100 * iou[novel].mean())
    assert m["mIoU"] == pytest.approx(100 * iou[present].mean())
    assert m["pACC"] == pytest.approx(100 * np.diag(cm).sum() / cm.sum())
    assert isinstance(synthetic_evaluator(meta), SemSegEvaluator)


def test_forward_both_losses_and_inference(synthetic_root, rn_teacher):
    from distill.integrations.torchvision.sem_seg import build_sem_seg_model, load_semseg_config
    from distill.teacher import ClassEmbeddings

    cfg = load_semseg_config(SMALL)
    vocab = ClassEmbeddings(rn_teacher.encode_text(["circle", "square"], "simple"), ["circle", "square"])
    model = build_sem_seg_model(cfg, vocab, [1, 2])
    imgs = [torch.rand(3, 96, 96) * 255, torch.rand(3, 80, 64) * 255]  # padded to 96x96
    labels = torch.full((2, 96, 96), 255, dtype=torch.long)
    labels[:, :40] = 1
    labels[:, 40:80] = 0
    labels[:, 80:] = 4  # novel: ignored
    targets = [torch.randn(rn_teacher.dim, 12, 12), torch.randn(rn_teacher.dim, 10, 8)]
    losses = model(imgs, labels, targets)
    assert set(losses) == {"loss_sem_seg", "loss_pixel_distill"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        logits = model(imgs)
    assert logits.shape == (2, 3, 96, 96)


def test_bad_label_files_name_the_file(synthetic_copy):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import load_sem_seg_samples

    dicts, _ = synthetic_dataset(synthetic_copy, "train")
    d = dicts[0]
    lab = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    too_big = lab.copy()
    too_big[5, 5] = 40
    cv2.imwrite(d["sem_seg_file_name"], too_big)
    with pytest.raises(DistillInputError, match=rf"{d['sem_seg_file_name']}: label value 40 .* exceeds the 16"):
        load_sem_seg_samples([d], 16)
    cv2.imwrite(d["sem_seg_file_name"], lab[:-8])
    with pytest.raises(DistillInputError, match=r"000001\.png: label size 96x88 differs from the image's 96x96"):
        load_sem_seg_samples([d], 16)
    cv2.imwrite(d["sem_seg_file_name"], lab)
    with pytest.raises(DistillInputError, match=r"000001\.png: the ignore value 0 lies inside"):
        load_sem_seg_samples([d], 16, ignore_value=0)
    cv2.imwrite(d["sem_seg_file_name"], np.full_like(lab, 255))
    with pytest.raises(DistillInputError, match=r"000001\.png: every pixel has the ignore value"):
        load_sem_seg_samples([d], 16)


def test_render_and_demo(ablation, synthetic_root, rn_teacher, tmp_path):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import semseg_demo
    from distill.utils.visualize_semseg import render_semseg

    img = np.full((32, 40, 3), 128, np.uint8)
    lab = np.zeros((32, 40), np.int64)
    lab[8:16, 8:20] = 2
    lab[0, 0] = 255
    out = render_semseg(img, lab, ["background", "circle", "star"], scale=2)
    assert out.shape[0] == 64 and out.shape[1] > 80 and out.dtype == np.uint8
    assert (out[20, 20] != 128).any() and (out[40, 60] == 128).all()  # class 2 coloured, background not
    with pytest.raises(ValueError, match="differ in size"):
        render_semseg(img, lab[:-1], ["background"])
    out_dir, _ = ablation
    files = [d["file_name"] for d in synthetic_dataset(synthetic_root, "val")[0][:2]]
    pic = semseg_demo(out_dir / "ce_pixel_distillation" / "model_final.pth", files, ["circle", "star", "kite"],
                      rn_teacher, tmp_path / "semseg.png", templates="simple")
    drawn = cv2.imread(str(pic))
    assert drawn is not None and drawn.shape[0] == 96 * 3


def test_regions_kind_reads_proposals(tmp_path):
    from distill.integrations.torchvision.sem_seg import (
        dense_target_config,
        load_region_boxes,
        load_semseg_config,
    )

    # the yaml's default proposals file may exist in a working tree after `make quickstart`: point elsewhere
    cfg = load_semseg_config(["MODEL.DISTILL.SEM_SEG.DENSE_TARGETS", "regions", "MODEL.DISTILL.SEM_SEG.PROPOSALS",
                              str(tmp_path / "missing.json")])
    with pytest.raises(DistillInputError, match="need MODEL.DISTILL.SEM_SEG.PROPOSALS"):
        dense_target_config(cfg)
    props = tmp_path / "p.json"
    props.write_text(json.dumps([{"image_id": 1, "bbox": [2, 3, 10, 20], "score": 0.9}]))
    cfg = load_semseg_config(["MODEL.DISTILL.SEM_SEG.DENSE_TARGETS", "regions", "MODEL.DISTILL.SEM_SEG.PROPOSALS",
                              str(props)])
    assert len(dense_target_config(cfg).proposals_sha256) == 64
    assert load_region_boxes(cfg, [1, 2])[1].tolist() == [[2.0, 3.0, 12.0, 23.0]]
