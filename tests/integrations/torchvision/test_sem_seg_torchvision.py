import json

import cv2
import numpy as np
import pytest
import torch

from distill.evaluation import SemSegEvaluator
from distill.utils import DistillInputError

# from scratch: the yaml's MODEL.WEIGHTS (the quickstart's ViLD student) need not exist in a working tree
SMALL = [
    "MODEL.DISTILL.SEM_SEG.DENSE_TARGETS",
    "windows",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.DISTILL.SEM_SEG.CONVS_DIM",
    "32",
    "SOLVER.IMS_PER_BATCH",
    "4",
    "MODEL.DISTILL.SEM_SEG.WINDOW_SIZES",
    "[48]",
    "MODEL.DISTILL.SEM_SEG.WINDOW_STRIDE",
    "24",
    "MODEL.WEIGHTS",
    "",
]


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
    return out, train_and_evaluate_segmenter(
        synthetic_root, out, rn_teacher, cfg, max_iter=3, num_train=8, num_val=4, progress=False
    )


def test_ablation_rows_files_and_shared_cache(ablation, synthetic_root, rn_teacher):
    from distill.evaluation import format_sem_seg_table

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
    table = format_sem_seg_table(result["rows"])
    assert table.count("\n") == 3 and "mIoU novel" in table
    assert f"| CE only | {result['rows']['CE only']['mIoU_base']:.1f} |" in table
    # each variant trained on the engine: its metrics lines and log file
    lines = [json.loads(x) for x in (out / "ce_only" / "metrics.json").read_text().splitlines()]
    assert lines[-1]["iteration"] == 3 and "loss_sem_seg" in lines[-1]
    assert "iter 3/3" in (out / "ce_only" / "log.txt").read_text()


def test_evaluation_matches_direct_confusion_matrix(ablation, synthetic_root, rn_teacher):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import (
        evaluate_segmenter,
        load_segmenter,
        load_sem_seg_samples,
        predict_sem_seg,
        synthetic_evaluator,
        synthetic_vocab,
    )

    out, result = ablation
    meta, all_vocab, _, all_ids, _ = synthetic_vocab(synthetic_root, rn_teacher)
    model = load_segmenter(out / "ce_only" / "model_final.pth", rn_teacher.dim)
    model.predictor.set_vocabulary(all_vocab, all_ids)
    val = load_sem_seg_samples(synthetic_dataset(synthetic_root, "val")[0][:4], 16)
    m = evaluate_segmenter(model, val, synthetic_evaluator(meta))
    assert m["mIoU_novel"] == pytest.approx(
        result["rows"]["CE only"]["mIoU_novel"]
    )  # the checkpoint round-trips
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
    with pytest.raises(
        DistillInputError, match=rf"{d['sem_seg_file_name']}: label value 40 .* exceeds the 16"
    ):
        load_sem_seg_samples([d], 16)
    cv2.imwrite(d["sem_seg_file_name"], lab[:-8])
    with pytest.raises(
        DistillInputError, match=r"000001\.png: label size 96x88 differs from the image's 96x96"
    ):
        load_sem_seg_samples([d], 16)
    cv2.imwrite(d["sem_seg_file_name"], lab)
    with pytest.raises(DistillInputError, match=r"000001\.png: the ignore value 0 lies inside"):
        load_sem_seg_samples([d], 16, ignore_value=0)
    cv2.imwrite(d["sem_seg_file_name"], np.full_like(lab, 255))
    with pytest.raises(DistillInputError, match=r"000001\.png: every pixel has the ignore value"):
        load_sem_seg_samples([d], 16)


def test_render_and_demo(ablation, synthetic_root, rn_teacher, tmp_path):
    from distill.data import synthetic_dataset
    from distill.data.images import read_image_rgb
    from distill.integrations.torchvision.sem_seg import segment_images
    from distill.utils.visualize_semseg import draw_semseg, render_semseg

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
    images = [read_image_rgb(f) for f in files]
    preds, legend = segment_images(
        out_dir / "ce_pixel_distillation" / "model_final.pth",
        images,
        ["circle", "star", "kite"],
        rn_teacher,
        templates="simple",
    )
    pic = draw_semseg(images, preds, legend, tmp_path / "semseg.png")
    drawn = cv2.imread(str(pic))
    assert drawn is not None and drawn.shape[0] == 96 * 3


def test_regions_kind_reads_proposals(tmp_path):
    from distill.integrations.torchvision.sem_seg import (
        dense_target_config,
        load_region_boxes,
        load_semseg_config,
    )

    # the yaml's default proposals file may exist in a working tree after `make quickstart`: point elsewhere
    cfg = load_semseg_config(
        [
            "MODEL.DISTILL.SEM_SEG.DENSE_TARGETS",
            "regions",
            "MODEL.DISTILL.SEM_SEG.PROPOSALS",
            str(tmp_path / "missing.json"),
        ]
    )
    with pytest.raises(DistillInputError, match="need MODEL.DISTILL.SEM_SEG.PROPOSALS"):
        dense_target_config(cfg)
    props = tmp_path / "p.json"
    props.write_text(json.dumps([{"image_id": 1, "bbox": [2, 3, 10, 20], "score": 0.9}]))
    cfg = load_semseg_config(
        ["MODEL.DISTILL.SEM_SEG.DENSE_TARGETS", "regions", "MODEL.DISTILL.SEM_SEG.PROPOSALS", str(props)]
    )
    assert len(dense_target_config(cfg).proposals_sha256) == 64
    assert load_region_boxes(cfg, [1, 2])[1].tolist() == [[2.0, 3.0, 12.0, 23.0]]


def _detector_checkpoint(path, cfg, seed):
    """A torchvision-backend detector checkpoint as the trainer writes it: {"model": state} with backbone.* keys."""
    from distill.integrations.torchvision.builders import build_backbone

    torch.manual_seed(seed)
    backbone = build_backbone(cfg)
    for p in backbone.parameters():
        p.data.normal_()
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["rpn.head.conv.0.0.weight"] = torch.zeros(3)  # the rest of a detector is not used
    torch.save({"model": state, "iteration": 7}, path)
    return state


def test_student_backbone_init_loads_backbone_and_names_bad_files(tmp_path):
    from distill.integrations.torchvision.sem_seg import (
        build_sem_seg_model,
        load_semseg_config,
        load_student_backbone,
    )
    from distill.teacher import ClassEmbeddings

    cfg = load_semseg_config(SMALL)
    vocab = ClassEmbeddings(torch.nn.functional.normalize(torch.randn(2, 16), dim=-1), ["circle", "square"])
    model = build_sem_seg_model(cfg, vocab, [1, 2])
    state = _detector_checkpoint(tmp_path / "det.pth", cfg, 1)
    head_before = {k: v.clone() for k, v in model.predictor.state_dict().items()}
    assert load_student_backbone(model, tmp_path / "det.pth") == len(model.backbone.state_dict())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
    for k, v in model.predictor.state_dict().items():
        assert torch.equal(v, head_before[k]), k  # the semantic branch starts fresh
    with pytest.raises(DistillInputError, match=r"MODEL.WEIGHTS .* not found"):
        load_student_backbone(model, tmp_path / "missing.pth")
    other = load_semseg_config(SMALL + ["MODEL.FPN.OUT_CHANNELS", "16"])
    _detector_checkpoint(tmp_path / "narrow.pth", other, 2)
    with pytest.raises(DistillInputError, match=r"narrow\.pth: MODEL.WEIGHTS does not fit .* vs"):
        load_student_backbone(model, tmp_path / "narrow.pth")
    torch.save({"model": {"roi_heads.x": torch.zeros(1)}}, tmp_path / "nobackbone.pth")
    with pytest.raises(DistillInputError, match="missing"):
        load_student_backbone(model, tmp_path / "nobackbone.pth")


def test_a_detectron2_student_is_refused_in_one_line(tmp_path):
    from distill.integrations.torchvision.sem_seg import (
        build_sem_seg_model,
        load_semseg_config,
        load_student_backbone,
    )
    from distill.teacher import ClassEmbeddings

    cfg = load_semseg_config(SMALL)
    vocab = ClassEmbeddings(torch.nn.functional.normalize(torch.randn(2, 16), dim=-1), ["circle", "square"])
    model = build_sem_seg_model(cfg, vocab, [1, 2])
    names = ("backbone.bottom_up.stem.conv1.weight", "proposal_generator.rpn_head.conv.weight", "roi_heads.x")
    torch.save({"model": {k: torch.zeros(1) for k in names}}, tmp_path / "d2.pth")  # detectron2's names
    with pytest.raises(
        DistillInputError, match=r"d2\.pth: MODEL.WEIGHTS was trained with the detectron2 backend"
    ):
        load_student_backbone(model, tmp_path / "d2.pth")


def test_rows_start_from_the_student_backbone_body_frozen(synthetic_root, rn_teacher, tmp_path):
    from distill.integrations.torchvision.sem_seg import load_semseg_config, train_and_evaluate_segmenter

    cfg = load_semseg_config(SMALL)
    state = _detector_checkpoint(tmp_path / "det.pth", cfg, 3)
    cfg = load_semseg_config(
        SMALL + ["MODEL.WEIGHTS", str(tmp_path / "det.pth"), "MODEL.BACKBONE.FREEZE_AT", "5"]
    )
    result = train_and_evaluate_segmenter(
        synthetic_root,
        tmp_path / "out",
        rn_teacher,
        cfg,
        {"CE only": 0.0},
        max_iter=2,
        num_train=4,
        num_val=2,
        progress=False,
    )
    assert result["init"] == str(tmp_path / "det.pth")
    saved = torch.load(tmp_path / "out" / "ce_only" / "model_final.pth", weights_only=True)["model"]
    body = [k for k in state if k.startswith("backbone.body.")]
    assert body and all(torch.equal(saved[k], state[k]) for k in body)  # FREEZE_AT 5: the ResNet as loaded
    fpn = [k for k in state if k.startswith("backbone.fpn.") and k.endswith("weight")]
    assert any(not torch.equal(saved[k], state[k]) for k in fpn)  # the FPN is trained


def test_missing_student_weights_fail_before_dense_targets(synthetic_root, rn_teacher, tmp_path):
    from distill.integrations.torchvision.sem_seg import load_semseg_config, train_and_evaluate_segmenter

    cfg = load_semseg_config(SMALL + ["MODEL.WEIGHTS", str(tmp_path / "vild" / "model_final.pth")])
    with pytest.raises(
        DistillInputError, match=r"model_final\.pth: MODEL.WEIGHTS .* not found: run the quickstart"
    ):
        train_and_evaluate_segmenter(
            synthetic_root,
            tmp_path / "out",
            rn_teacher,
            cfg,
            max_iter=1,
            num_train=2,
            num_val=1,
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_semseg_config_defaults_are_the_measured_ones():
    """The yaml's comment documents these (benchmarks/segmentation_ablation.py); change both together."""
    from distill.integrations.torchvision.sem_seg import load_semseg_config

    cfg = load_semseg_config()
    d = cfg.MODEL.DISTILL
    assert d.SEM_SEG.DENSE_TARGETS == "regions" and d.SEM_SEG.PROPOSALS.endswith("proposals_train.json")
    assert (d.PIXEL_LOSS, d.PIXEL_LOSS_WEIGHT, d.TEMPERATURE) == ("cosine", 1.0, 0.05)
    assert cfg.MODEL.WEIGHTS.endswith("vild/model_final.pth") and cfg.MODEL.BACKBONE.FREEZE_AT == 5
    assert not d.SEM_SEG.DISTILL_BACKGROUND
    assert (d.SEM_SEG.CONVS_DIM, cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH) == (128, 800, 4)
    assert d.SEM_SEG.REGION_STORE.endswith("regions")


def test_synthetic_evaluator_novel_classes_and_present_classes_only(synthetic_root):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import synthetic_evaluator

    _, meta = synthetic_dataset(synthetic_root, "val")
    ev = synthetic_evaluator(meta)
    assert ev.novel == [4, 7, 10, 13, 15]
    assert ev.base == [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14]  # background counts as a base class
    gt = torch.tensor([[0, 0, 4, 4], [1, 1, 7, 255]])
    pred = torch.tensor([[0, 0, 4, 1], [1, 1, 4, 3]])
    ev.update(pred, gt)
    m = ev.compute()
    # novel: 4 (IoU 1/3), 7 (0); 10, 13, 15 are absent and never predicted, so they do not count
    assert m["mIoU_novel"] == pytest.approx(100 * (1 / 3 + 0) / 2)
    # base: 0 (1), 1 (2/3); 3 is predicted where the label is ignored, so it is not scored either
    assert m["mIoU_base"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_demo_semseg_task_end_to_end(ablation, synthetic_root, tmp_path):
    import subprocess
    import sys

    from distill.integrations.torchvision.sem_seg import semseg_config_file
    from tests.conftest import REPO

    out_dir, _ = ablation
    image = synthetic_root / "images" / "val" / "000001.png"
    cmd = [
        sys.executable,
        str(REPO / "tools/demo.py"),
        "--task",
        "semseg",
        "--config-file",
        semseg_config_file(),
        "--weights",
        str(out_dir / "ce_pixel_distillation" / "model_final.pth"),
        "--input",
        str(image),
        "--output",
        str(tmp_path / "demo"),
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode == 0, r.stderr
    assert "000001.png:" in r.stdout and "wrote 1 segmentation picture" in r.stdout
    drawn = cv2.imread(str(tmp_path / "demo" / "000001.png"))
    labels = cv2.imread(str(tmp_path / "demo" / "000001_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (96, 96) and labels.max() <= 15
    assert drawn.shape[0] == 96 * 4 and drawn.shape[1] > 96 * 4  # scaled to 384 px, legend on the right
    r = subprocess.run(
        cmd[:6] + ["--weights", str(tmp_path / "nope.pth")] + cmd[8:], capture_output=True, text=True
    )
    assert r.returncode == 2 and "nope.pth" in r.stderr


def test_frozen_resnet_runs_once_per_image_and_flip_with_the_same_training(synthetic_root):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import (
        body_feature_cache,
        build_sem_seg_model,
        load_sem_seg_samples,
        load_semseg_config,
        train_segmenter,
    )
    from distill.teacher import ClassEmbeddings

    dicts, meta = synthetic_dataset(synthetic_root, "train")
    samples = load_sem_seg_samples(dicts[:6], max(meta.category_ids) + 1)
    vocab = ClassEmbeddings(
        torch.nn.functional.normalize(torch.randn(len(meta.category_ids), 16), dim=-1),
        list(meta.thing_classes),
    )
    cfg = load_semseg_config(
        SMALL
        + [
            "MODEL.BACKBONE.FREEZE_AT",
            "5",
            "MODEL.DISTILL.PIXEL_LOSS_WEIGHT",
            "0.0",
            "SOLVER.WARMUP_ITERS",
            "0",
        ]
    )
    states = []
    for cached in (True, False):
        torch.manual_seed(0)
        model = build_sem_seg_model(cfg, vocab, list(meta.category_ids))
        init = {k: v.clone() for k, v in model.state_dict().items()}
        stats = train_segmenter(cfg, model, samples, max_iter=4, progress=False, cache_body=cached)
        states.append((stats["last_losses"], model.state_dict()))
    (loss_a, a), (loss_b, b) = states
    assert loss_a["loss_sem_seg"] == pytest.approx(loss_b["loss_sem_seg"], rel=1e-4)
    trained = [k for k in a if k.startswith("predictor.") and a[k].is_floating_point()]
    assert trained and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a if a[k].is_floating_point())
    assert any(not torch.equal(a[k], init[k]) for k in trained)  # the branch did train
    assert all(torch.equal(a[k], init[k]) for k in a if k.startswith("backbone.body."))

    cache = body_feature_cache(model, samples)
    assert (
        len(cache) == 6
        and cache[0][0]["0"].shape[0] == 64
        and not torch.equal(cache[0][0]["3"], cache[0][1]["3"])
    )
    assert body_feature_cache(model, samples, max_bytes=1) is None
    other = [dict(samples[0], image=samples[0]["image"][:, :64])] + samples[1:]
    assert body_feature_cache(model, other) is None  # sizes differ: a batch would pad
    unfrozen = build_sem_seg_model(
        load_semseg_config(SMALL + ["MODEL.BACKBONE.FREEZE_AT", "4"]), vocab, list(meta.category_ids)
    )
    assert body_feature_cache(unfrozen, samples) is None


def test_flip_test_averages_the_mirrors_probabilities():
    from distill.integrations.torchvision.sem_seg import (
        build_sem_seg_model,
        load_semseg_config,
        predict_sem_seg,
    )
    from distill.teacher import ClassEmbeddings

    torch.manual_seed(0)
    vocab = ClassEmbeddings(torch.nn.functional.normalize(torch.randn(3, 16), dim=-1), ["a", "b", "c"])
    cfg = load_semseg_config(SMALL + ["TEST.AUG.ENABLED", "True"])
    model = build_sem_seg_model(cfg, vocab, [1, 2, 3]).eval()
    off = load_semseg_config(SMALL + ["TEST.AUG.ENABLED", "False"])
    assert model.flip_test and not build_sem_seg_model(off, vocab, [1, 2, 3]).flip_test
    images = [
        torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8),
        torch.randint(0, 255, (3, 64, 40), dtype=torch.uint8),
    ]
    got = predict_sem_seg(model, images)
    with torch.no_grad():
        for im, pred in zip(images, got):
            w = im.shape[2]
            probs = model([im])[0].softmax(0)[:, :64, :w] + model([im.flip(-1)])[0].softmax(0)[
                :, :64, :w
            ].flip(-1)
            assert torch.equal(pred, model.predictor.label_map.to_value(probs.argmax(0)))
    model.flip_test = False
    plain = predict_sem_seg(model, images)
    assert any(not torch.equal(a, b) for a, b in zip(plain, got))
