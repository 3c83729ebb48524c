"""The pieces the real recipes added: their configs on both backends, repeat-factor sampling, large-scale jitter,
compact proposals, the shaped trees, random-weight teachers and trimmed text tokens."""

import numpy as np
import pytest
import torch

from distill.config import load_config
from distill.data.sampling import repeat_factors, repeated_indices
from distill.data.shaped import lvis_categories, write_shaped_tree
from distill.teacher.regions import load_proposals, save_proposals_npz
from distill.utils import DistillInputError, read_json
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("ov_*/vild*.yaml"))  # the ViLD recipes (F-VLM: test_rehearsal_fvlm)


def test_recipe_configs_load_on_torchvision_with_the_published_settings():
    assert len(CONFIGS) == 6
    for path in CONFIGS:
        cfg = load_config(str(path))
        d, lvis = cfg.MODEL.DISTILL, "ov_lvis" in str(path)
        assert (
            d.TEACHER.ARCH == ("ViT-L-14" if "vitl14" in path.name else "ViT-B-32")
            and d.TEACHER.PRETRAINED == "openai"
        )
        assert d.METHOD == ("vild_text" if path.name.startswith("vild_text") else "vild")
        assert d.VILD.IMAGE_LOSS_WEIGHT == 0.5  # read by "vild" only: "vild_text" distils no images
        assert (
            cfg.MODEL.RESNETS.DEPTH == 50
            and cfg.MODEL.BACKBONE.WEIGHTS == "imagenet"
            and cfg.INPUT.LSJ.ENABLED
        )
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.LSJ.SIZE) == (1024, 1024, 1024)
        assert cfg.MODEL.MASK_ON == lvis and d.VILD.NUM_DISTILL_PROPOSALS == 300
        if lvis:
            assert cfg.TEST.DETECTIONS_PER_IMAGE == 300 and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST < 1e-3
            assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.5
            assert cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler"


def test_recipe_configs_load_on_detectron2_with_msra_r50():
    pytest.importorskip("detectron2", reason="detectron2 is not installed (INSTALL.md: detectron2)")
    d2 = pytest.importorskip("distill.integrations.detectron2")
    for path in CONFIGS:
        cfg = d2.load_detectron2_config(str(path))
        assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
        assert cfg.INPUT.FORMAT == "BGR" and list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1
        scratch = d2.load_detectron2_config(str(path), ["MODEL.BACKBONE.WEIGHTS", ""])
        assert scratch.MODEL.WEIGHTS == "" and scratch.INPUT.FORMAT == "RGB"


def test_repeat_factors_follow_the_lvis_rule():
    # category 2 in one of 11 images: f = 1/11, t = 0.4 → r = sqrt(4.4); category 1 (f = 10/11) → 1
    dicts = [
        {"annotations": [{"category_id": 1}] + ([{"category_id": 2}] if i == 0 else [])} for i in range(10)
    ]
    dicts.append({"annotations": []})
    f = repeat_factors(dicts, 0.4)
    assert f[0] == pytest.approx(4.4**0.5) and f[1] == pytest.approx(1.0) and f[-1] == 1.0
    rng = np.random.default_rng(0)
    idx = np.concatenate([repeated_indices(np.array([1.5, 1.0]), rng) for _ in range(2000)])
    assert np.bincount(idx)[0] / 2000 == pytest.approx(1.5, abs=0.05)
    try:
        from detectron2.data.samplers import RepeatFactorTrainingSampler
    except ImportError:
        return
    ref = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.4)
    assert torch.allclose(ref.double(), torch.from_numpy(f))


def test_lsj_mapper_crops_to_the_square_and_drops_cut_regions(tmp_path):
    from distill.integrations.torchvision.mapper import DatasetMapper, MapperConfig

    root = write_shaped_tree(tmp_path, 2, 1)
    im = read_json(root / "coco/annotations/instances_train2017.json")
    anns = [a for a in im["annotations"] if a["image_id"] == 1 and not a["iscrowd"]]
    d = {
        "file_name": str(root / "coco/train2017/000000000001.jpg"),
        "image_id": 1,
        "height": 480,
        "width": 640,
        "annotations": [{**a, "category_id": 0} for a in anns],
    }
    sizes = set()
    for seed in range(6):
        m = DatasetMapper(MapperConfig(lsj=(256, 0.5, 2.0), flip_prob=0.5), seed=seed)(d)
        h, w = m["image"].shape[1:]
        sizes.add((h, w))
        assert h <= 256 and w <= 256 and m["masks"].shape[1:] == (h, w)
        b = m["boxes"]
        assert len(b) == len(m["labels"]) == len(m["masks"]) <= len(anns)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) >= 1).all()
    assert len(sizes) > 1  # the scale is random


def test_proposals_npz_round_trip_and_errors(tmp_path):
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4]], dtype=torch.float32)
    scores = torch.tensor([0.1, 0.9, 0.5])
    n = save_proposals_npz(tmp_path / "p.npz", [(7, boxes, scores), (8, boxes[:0], scores[:0])])
    assert n == 3
    got = load_proposals(tmp_path / "p.npz", [7, 8], max_per_image=2)
    assert torch.equal(got[7], boxes[[1, 2]]) and got[8].shape == (0, 4)  # best first
    with pytest.raises(DistillInputError, match="lacks"):
        load_proposals(tmp_path / "p.npz", [8])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DistillInputError, match="not a proposals"):
        load_proposals(tmp_path / "bad.npz", [7])


def test_shaped_trees_have_the_real_structure(tmp_path):
    root = write_shaped_tree(tmp_path, 3, 2)
    coco = read_json(root / "coco/annotations/instances_train2017.json")
    assert len(coco["categories"]) == 80 and coco["categories"][-1] == {
        "id": 90,
        "name": "toothbrush",
        "supercategory": "indoor",
    }
    assert {(i["width"], i["height"]) for i in coco["images"]} >= {(640, 480), (427, 640)}
    assert any(a["iscrowd"] and isinstance(a["segmentation"], dict) for a in coco["annotations"])
    assert any(isinstance(a["segmentation"], list) for a in coco["annotations"])
    assert {i["id"] for i in coco["images"]} - {a["image_id"] for a in coco["annotations"]}  # an empty image
    lvis = read_json(root / "lvis/lvis_v1_val.json")
    freq = [c["frequency"] for c in lvis["categories"]]
    assert (len(freq), freq.count("r"), freq.count("c"), freq.count("f")) == (1203, 337, 461, 405)
    im = lvis["images"][0]
    assert im["coco_url"].endswith("val2017/000000000004.jpg") and "neg_category_ids" in im
    assert "not_exhaustive_category_ids" in im and lvis_categories() == lvis_categories()


def test_random_weight_teacher_and_trimmed_text_tokens():
    from distill.teacher import create_teacher

    t = create_teacher("distill-tiny-vit", "none")
    assert t.pretrained is None
    tokens = t.tokenizer(["a photo of a cat.", "a very long prompt of a much longer category name"])
    with torch.no_grad():
        torch.testing.assert_close(
            t._encode_tokens(tokens), t.model.encode_text(tokens), atol=1e-5, rtol=1e-5
        )


def test_serialized_list_returns_equal_items_from_one_buffer():
    from distill.data.serialize import SerializedList

    items = [
        {"image_id": i, "annotations": [{"bbox": [i, 0, 1, 1], "segmentation": [[0, 0, 1, 1, 2, 0]]}]}
        for i in range(50)
    ] + [{}]
    s = SerializedList(items)
    assert len(s) == 51 and [s[i] for i in range(51)] == items and s.nbytes > 0
    assert len(SerializedList([])) == 0


def test_atomic_writes_honour_the_umask(tmp_path):
    import os
    import stat

    from distill.utils import atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o640


def test_detectron2_lsj_mapper_crops_polygons_without_shapely(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (INSTALL.md: detectron2)")
    d2 = pytest.importorskip("distill.integrations.detectron2")
    from distill.data import load_coco_json
    from distill.data.prepare import make_ov_coco
    from distill.utils import atomic_write_json

    root = write_shaped_tree(tmp_path, 2, 1)
    ov = make_ov_coco(read_json(root / "coco/annotations/instances_train2017.json"), train=False)
    atomic_write_json(tmp_path / "ov.json", ov)
    dicts, _ = load_coco_json(tmp_path / "ov.json", root / "coco/train2017")
    cfg = d2.load_detectron2_config(
        str(REPO / "configs/ov_lvis/vild_r50_fpn_lsj.yaml"),
        [
            "MODEL.BACKBONE.WEIGHTS",
            "",
            "INPUT.LSJ.SIZE",
            "256",
            "MODEL.DISTILL.METHOD",
            "vild_text",
        ],
    )
    mapper = d2.OpenVocabDatasetMapper(cfg, True)
    for _ in range(4):
        out = mapper(dict(dicts[0]))
        h, w = out["image"].shape[1:]
        assert h <= 256 and w <= 256 and out["instances"].gt_masks.tensor.shape[1:] == (h, w)


def test_getting_started_lists_every_command_of_the_recipes():
    import re

    from benchmarks.workloads.recipes import DATASETS, command_line, recipe

    page = re.sub(r"\s+", " ", (REPO / "GETTING_STARTED.md").read_text().replace("\\\n", " "))
    for dataset in DATASETS:
        for stage in recipe(dataset):
            assert command_line(stage) in page, command_line(stage)


def test_rehearsal_runs_training_and_evaluation_without_loader_workers():
    # detectron2's test loader reads DATALOADER.NUM_WORKERS too: the configs' 8 workers for one image
    from benchmarks.workloads.recipes import Rehearsal, recipe

    for stage in recipe("ov_lvis", "detectron2", rehearsal=Rehearsal()):
        if stage.tool == "train_net.py":
            i = stage.args.index("DATALOADER.NUM_WORKERS")
            assert stage.args[i + 1] == "0", stage.name
    assert "DATALOADER.NUM_WORKERS" not in " ".join(recipe("ov_lvis")[-2].args)  # the real recipe keeps 8
