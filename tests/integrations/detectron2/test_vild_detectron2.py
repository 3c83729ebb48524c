"""The detectron2 backend: configs, registries, OpenVocabROIHeads, mapper, parity with the torchvision backend,
train_net.py (needs detectron2)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

detectron2 = pytest.importorskip(
    "detectron2",
    reason="detectron2 is not installed (official source install: see INSTALL.md, 'detectron2')",
)

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import ROI_HEADS_REGISTRY  # noqa: E402
from detectron2.modeling.poolers import ROIPooler  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import distill.integrations.detectron2 as d2_distill  # noqa: E402
from distill.config import get_cfg as tv_get_cfg  # noqa: E402
from distill.config import load_config  # noqa: E402
from distill.data import synthetic_dataset  # noqa: E402
from distill.data.region_store import (  # noqa: E402
    RegionEmbeddingStore,
    RegionStoreWriter,
    ShardRecord,
)
from distill.data.synthetic import SYNTHETIC_CATEGORIES  # noqa: E402
from distill.integrations.detectron2.poolers import FusedROIPooler  # noqa: E402
from distill.methods import METHOD_TARGETS, RegionStoreSource  # noqa: E402
from distill.teacher import ClassEmbeddings  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.conftest import SMALL_MODEL as COMMON_SMALL_MODEL  # noqa: E402

pytestmark = pytest.mark.detectron2
CONFIGS = [
    str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml"),
    str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml"),
]
CONFIG = CONFIGS[0]
DIM = 32
SMALL_MODEL = [
    *COMMON_SMALL_MODEL,
    "MODEL.DEVICE",
    "cpu",
    "MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS",
    "4",
    # defaults where detectron2's (14, 0) and the torchvision backend's (7, 4) differ
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "7",
    "MODEL.ROI_MASK_HEAD.NUM_CONV",
    "4",
]


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    g = torch.Generator().manual_seed(0)
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    emb = F.normalize(torch.randn(len(names), DIM, generator=g), dim=1)
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    ClassEmbeddings(emb, names).save(d / "all.npy")
    ClassEmbeddings(emb[base], [names[i] for i in base]).save(d / "base.npy")
    return d / "base.npy", d / "all.npy"


@pytest.fixture(scope="module")
def region_store(tmp_path_factory, synthetic_root):
    """A store of 5 random boxes and embeddings per training image (original pixels)."""
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    g = torch.Generator().manual_seed(1)
    root = tmp_path_factory.mktemp("regions") / "store"
    writer = RegionStoreWriter(root, {"dim": DIM}, [d["image_id"] for d in dicts], chunk_size=16)
    for k, ids in enumerate(writer.chunks):
        rec = ShardRecord()
        for image_id in ids:
            xy = torch.rand(5, 2, generator=g) * 60
            rec.image_ids.append(image_id)
            rec.boxes.append(torch.cat([xy, xy + 8 + torch.rand(5, 2, generator=g) * 30], 1))
            rec.embeddings.append(F.normalize(torch.randn(5, DIM, generator=g), dim=1))
        writer.write_shard(k, rec)
    writer.finalize()
    return root


@pytest.fixture(scope="module")
def registered(synthetic_root):
    return d2_distill.register_synthetic(synthetic_root)


def cfg_for(vocab_files, *opts, config=CONFIG):
    return d2_distill.load_detectron2_config(
        config,
        [
            *SMALL_MODEL,
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(vocab_files[0]),
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
            str(vocab_files[1]),
            *opts,
        ],
    )


@pytest.mark.parametrize("config", CONFIGS)
def test_shared_yaml_loads_and_builds_by_registry_name(config, vocab_files):
    cfg = cfg_for(vocab_files, config=config)
    assert cfg.SOLVER.OPTIMIZER == "AdamW" and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64
    assert ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME) is d2_distill.OpenVocabROIHeads
    model = d2_distill.build_detector(cfg)
    assert isinstance(model, d2_distill.OpenVocabRCNN) and isinstance(
        model.roi_heads, d2_distill.OpenVocabROIHeads
    )
    assert isinstance(model.roi_heads.box_pooler, FusedROIPooler)
    assert isinstance(model.roi_heads.mask_pooler, FusedROIPooler)
    assert model.roi_heads.num_classes == len(ClassEmbeddings.load(vocab_files[0]))
    unfused = d2_distill.build_detector(
        cfg_for(vocab_files, "MODEL.ROI_HEADS.FUSED_POOLER", "False", config=config)
    )
    assert isinstance(unfused.roi_heads.box_pooler, ROIPooler)
    # a torchvision-backend config holds detectron2 keys only: it converts
    assert d2_distill.to_detectron2_cfg(load_config(config)).MODEL.RESNETS.DEPTH == 18
    d2_distill.to_detectron2_cfg(tv_get_cfg())


def test_class_agnostic_heads_are_required(vocab_files):
    with pytest.raises(d2_distill.builders.DistillInputError, match="CLS_AGNOSTIC_MASK"):
        d2_distill.build_detector(cfg_for(vocab_files, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False"))


def test_mapper_moves_distillation_boxes_with_the_image(synthetic_root, region_store):
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    d = dicts[0]
    mapper = d2_distill.OpenVocabDatasetMapper(
        True,
        augmentations=[T.ResizeShortestEdge(192, 1000), T.RandomFlip(1.0)],
        image_format="RGB",
        use_instance_mask=True,
        method_targets=RegionStoreSource(str(region_store), 3),
    )
    out = mapper(d)
    h, w = out["image"].shape[1:]
    boxes, emb = RegionEmbeddingStore(region_store)[d["image_id"]]
    sx, sy = w / d["width"], h / d["height"]
    b = boxes[:3] * torch.tensor([sx, sy, sx, sy])
    expected = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    expected[:, 0::2] = expected[:, 0::2].clamp(0, w)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, h)
    assert torch.allclose(out[METHOD_TARGETS].boxes, expected, atol=1e-3)
    assert torch.equal(out[METHOD_TARGETS].teacher_embeddings(), emb[:3])
    assert out["instances"].gt_masks.tensor.shape[1:] == (h, w)  # RLE masks read as bitmasks
    test = d2_distill.OpenVocabDatasetMapper(False, augmentations=[], image_format="RGB")(d)
    assert METHOD_TARGETS not in test


def test_roi_heads_forward_backward_and_other_vocabulary(
    synthetic_root, vocab_files, region_store, registered
):
    torch.manual_seed(0)
    cfg = cfg_for(vocab_files, "MODEL.DISTILL.VILD.REGION_STORE", str(region_store))
    model = d2_distill.build_detector(cfg)
    dicts = d2_distill.trainer.load_train_set(cfg, ClassEmbeddings.load(vocab_files[0]))[0]
    batch = [d2_distill.OpenVocabDatasetMapper(cfg, True)(d) for d in dicts[:2]]
    model.train()
    with EventStorage() as storage:
        losses = model(batch)
    assert set(losses) == {
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_vild_text",
        "loss_box_reg",
        "loss_vild_image",
        "loss_mask",
    }
    assert "roi_heads/cls_accuracy" in storage.latest() and "roi_heads/num_extra_rois" in storage.latest()
    sum(losses.values()).backward()
    predictor = model.roi_heads.box_predictor
    assert predictor.classifier.bg_embedding.grad is not None
    assert predictor.embed_head.proj.weight.grad.abs().sum() > 0
    model.eval()
    allv = ClassEmbeddings.load(vocab_files[1])
    with d2_distill.evaluation.test_vocabulary(model, cfg, "distill_synthetic_val"):
        assert model.roi_heads.num_classes == len(allv) and model.roi_heads.novel_mask.sum() > 0
        with torch.no_grad():
            inst = model([d2_distill.OpenVocabDatasetMapper(cfg, False)(dicts[0])])[0]["instances"]
    assert model.roi_heads.num_classes == len(
        ClassEmbeddings.load(vocab_files[0])
    )  # training vocabulary back
    assert len(inst) and inst.pred_classes.max() < len(allv)
    assert inst.pred_masks.shape[1:] == (dicts[0]["height"], dicts[0]["width"])
    props = d2_distill.proposals.dataset_proposals(model, dicts[:2], 96, 200, top_k=5, progress=False)
    assert 0 < len(props) <= 10 and {p["image_id"] for p in props} <= {d["image_id"] for d in dicts[:2]}
    assert all(p["bbox"][0] + p["bbox"][2] <= dicts[0]["width"] + 1e-3 for p in props)


def test_lvis_training_data_is_flagged_for_repeat_factor_sampling(synthetic_root, vocab_files, registered):
    cfg = cfg_for(vocab_files, "DATASETS.TRAIN", "('distill_synthetic_lvis_train',)")
    dicts, lvis = d2_distill.trainer.load_train_set(cfg, ClassEmbeddings.load(vocab_files[0]))
    assert lvis and dicts
    assert not d2_distill.trainer.load_train_set(cfg_for(vocab_files), ClassEmbeddings.load(vocab_files[0]))[
        1
    ]
    assert "distill_synthetic_lvis_train" in DatasetCatalog.list()


@pytest.mark.parametrize("name", ["distill_synthetic_val", "distill_synthetic_lvis_val"])
def test_ov_evaluator_on_ground_truth_boxes(synthetic_root, registered, name, tmp_path):
    """Detections equal to the ground truth score AP 100 under either protocol; LVIS adds APr / APc / APf."""
    dicts = DatasetCatalog.get(name)
    ev = d2_distill.OVEvaluator(name, str(tmp_path))
    ev.reset()
    for d in dicts:
        xywh = torch.tensor([a["bbox"] for a in d["annotations"]]).view(-1, 4)
        inst = Instances(
            (d["height"], d["width"]),
            pred_boxes=Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)),
            scores=torch.ones(len(xywh)),
            pred_classes=torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.long),
        )
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()
    assert set(res) == {"bbox"} and res["bbox"]["AP"] == pytest.approx(100.0)
    assert ("APr" in res["bbox"]) == ("lvis" in name)
    flat = d2_distill.evaluation.flatten_ov_results(res)
    assert flat["box_AP50_base"] == pytest.approx(100.0) and (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("method", ["vild", "vild_ensemble"])
def test_same_head_weights_give_same_scores_as_torchvision(vocab_files, method):
    """Same box-head / predictor weights and pooled features → the same class scores in both backends (one
    predictor, `OpenVocabBoxPredictor`, under both RoI heads)."""
    from distill.integrations.torchvision.builders import build_detector as tv_build

    opts = [*SMALL_MODEL, "MODEL.DISTILL.METHOD", method]
    base, allv = ClassEmbeddings.load(vocab_files[0]), ClassEmbeddings.load(vocab_files[1])
    novel = torch.tensor([c["split"] == "novel" for c in SYNTHETIC_CATEGORIES])
    tv = tv_build(load_config(CONFIG, opts + ["MODEL.BACKBONE.WEIGHTS", ""]), base).roi_heads.eval()
    cfg = cfg_for(vocab_files, "MODEL.DISTILL.METHOD", method)
    shape = {f"p{k}": ShapeSpec(channels=16, stride=2**k) for k in range(2, 7)}
    d2 = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, shape).eval()
    pred = d2.box_predictor
    with torch.no_grad():
        for d2_fc, tv_fc in ((d2.box_head.fc1, tv.box_head.fcs[0]), (d2.box_head.fc2, tv.box_head.fcs[2])):
            d2_fc.load_state_dict(tv_fc.state_dict())
        pred.load_state_dict(tv.box_predictor.state_dict())
    assert sorted(pred.state_dict()) == sorted(tv.box_predictor.state_dict())
    tv.set_vocabulary(allv, novel)
    d2.set_vocabulary(allv, novel)
    pooled = torch.randn(9, 16, 7, 7)
    with torch.no_grad():
        expected, _ = tv.box_predictor.predict(tv.box_head(pooled))
        proposals = [Instances((64, 64), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 9)))]
        scores = pred.predict_probs(pred.predict(d2.box_head(pooled)), proposals)[0]
        text = tv.box_predictor(tv.box_head(pooled))[2].softmax(-1)
    assert scores.shape == (9, len(allv) + 1)
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.allclose(scores, text, atol=1e-6) == (method == "vild")  # the ensemble scores otherwise


def train_net(
    tmp_path, synthetic_root, vocab_files, region_store, flags=(), opts=(), backend="detectron2", check=True
):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    args = [
        sys.executable,
        str(REPO / "tools/train_net.py"),
        "--config-file",
        CONFIG,
        "--no-progress",
        "--backend",
        backend,
        *flags,
        *SMALL_MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab_files[0]),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(vocab_files[1]),
        "MODEL.DISTILL.VILD.REGION_STORE",
        str(region_store),
        "DATASETS.ROOT",
        str(synthetic_root.parent),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.WARMUP_ITERS",
        "5",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        *opts,
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def test_train_net_20_iterations_then_eval_only(tmp_path, synthetic_root, vocab_files, region_store):
    r = train_net(
        tmp_path,
        synthetic_root,
        vocab_files,
        region_store,
        backend="auto",
        opts=[
            "SOLVER.MAX_ITER",
            "20",
            "SOLVER.CHECKPOINT_PERIOD",
            "5",
            "SOLVER.CHECKPOINT_MAX_TO_KEEP",
            "1",
        ],
    )
    assert "d2.engine.train_loop" in r.stdout  # auto picked detectron2
    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    last = [x for x in lines if "loss_vild_text" in x][-1]
    assert last["iteration"] == 19 and last["loss_vild_image"] > 0 and "roi_heads/cls_accuracy" in last
    assert (out / "model_final.pth").exists() and (out / "config.yaml").exists()
    assert "| box |" in r.stdout and "| mask |" in r.stdout  # the evaluation after training
    assert [p.name for p in out.glob("model_0*.pth")] == ["model_0000019.pth"]  # the newest periodic one kept
    r = train_net(
        tmp_path,
        synthetic_root,
        vocab_files,
        region_store,
        ["--eval-only"],
        ["MODEL.WEIGHTS", str(out / "model_final.pth")],
    )
    assert "| box |" in r.stdout and "AP50 novel" in r.stdout
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert (
        final["dataset"] == "distill_synthetic_val"
        and "box_AP50_novel" in final
        and "mask_AP50_novel" in final
    )
    r = train_net(
        tmp_path,
        synthetic_root,
        vocab_files,
        region_store,
        ["--eval-only"],
        ["MODEL.WEIGHTS", str(out / "model_final.pth"), "MODEL.RESNETS.DEPTH", "34"],
        check=False,
    )
    assert r.returncode == 2 and "does not fit this model" in r.stderr and "Traceback" not in r.stderr
    # the demo functions take the torchvision-style config and the detectron2 checkpoint
    from distill.integrations.detectron2 import demo

    cfg = load_config(CONFIG, [*SMALL_MODEL, "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", str(vocab_files[0])])
    model = demo.load_for_inference(cfg, str(out / "model_final.pth"), ClassEmbeddings.load(vocab_files[1]))
    dicts, meta = synthetic_dataset(synthetic_root, "val")
    det = demo.predict(model, cfg, {k: dicts[0][k] for k in ("file_name", "height", "width", "image_id")})
    assert det["boxes"].shape[1] == 4 and (det["labels"] < len(meta.thing_classes)).all()


class _Toy(torch.nn.Module):
    """Every parameter kind the weight-decay rules tell apart."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.gn = torch.nn.GroupNorm(2, 4)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)
        self.background = torch.nn.Parameter(torch.randn(1, 4))  # any name: declared, not looked up

    def no_weight_decay(self):
        return [self.background]


def _decay_by_name(model, groups):
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


@pytest.mark.parametrize("bias_decay", [None, 0.0, 5e-3])
def test_torchvision_optimizer_groups_follow_detectron2_decay_rules(bias_decay):
    from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

    from distill.integrations.shared import without_decay
    from distill.integrations.torchvision.trainer import optimizer_param_groups

    cfg = tv_get_cfg()
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY_BIAS = (
        1e-2,
        1e-3,
        bias_decay,
    )
    model = _Toy()
    ours = _decay_by_name(model, optimizer_param_groups(cfg, model))
    d2_groups = get_default_optimizer_params(
        model, weight_decay=1e-2, weight_decay_norm=1e-3, weight_decay_bias=bias_decay
    )
    assert _decay_by_name(model, d2_groups)["background"] == 1e-2  # detectron2's rules alone would decay it
    groups = without_decay(d2_groups, model, reduce_param_groups)  # the detectron2 trainer's groups
    theirs = _decay_by_name(model, groups)
    assert ours == theirs
    # the groups and their order are those of detectron2's own name override (full-model clipping sums in it)
    by_name = get_default_optimizer_params(
        model,
        weight_decay=1e-2,
        weight_decay_norm=1e-3,
        weight_decay_bias=bias_decay,
        overrides={"background": {"weight_decay": 0.0}},
    )
    names = {id(p): n for n, p in model.named_parameters()}
    layout = lambda gs: [([names[id(p)] for p in g["params"]], g["weight_decay"]) for g in gs]  # noqa: E731
    assert layout(groups) == layout(by_name)
    assert ours["conv.weight"] == 1e-2 and ours["gn.weight"] == 1e-3 and ours["background"] == 0.0


@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_torchvision_gradient_clipping_matches_detectron2(clip_type):
    from distill.integrations.detectron2.trainer import add_gradient_clipping
    from distill.integrations.torchvision.trainer import clip_gradients

    cfg = tv_get_cfg()
    c = cfg.SOLVER.CLIP_GRADIENTS
    c.ENABLED, c.CLIP_TYPE, c.CLIP_VALUE = True, clip_type, 0.05
    d2cfg = d2_distill.get_detectron2_cfg()
    d2cfg.SOLVER.CLIP_GRADIENTS.ENABLED, d2cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = True, clip_type
    d2cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.05
    torch.manual_seed(0)
    a = _Toy()
    b = _Toy()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 6, 6)
    for m in (a, b):
        m.fc(m.bn(m.gn(m.conv(x))).mean((2, 3))).pow(2).sum().mul(10).backward()
        m.background.grad = torch.ones_like(m.background)
    clip_gradients(cfg, a)
    # detectron2 clips inside the optimizer's step: a zero-lr SGD leaves the clipped gradients to compare
    opt = add_gradient_clipping(d2cfg, torch.optim.SGD(b.parameters(), lr=0.0))
    opt.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    norms = torch.stack([p.grad.norm() for p in a.parameters()])
    limit = {
        "value": max(p.grad.abs().max() for p in a.parameters()),
        "norm": norms.max(),
        "full_model": norms.norm(),
    }[clip_type]
    assert abs(limit.item() - 0.05) < 1e-6  # the gradients were large: clipping took effect
