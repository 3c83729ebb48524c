import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed (the torchvision backend is tested instead)"
)

from distill.teacher import ClassEmbeddings  # noqa: E402

D = 16


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    import distill.integrations.detectron2 as d2d
    from distill.integrations.torchvision.sem_seg import semseg_config_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vocab") / "base.npy"
    ClassEmbeddings(F.normalize(torch.randn(2, D), dim=-1), ["circle", "square"]).save(path)
    return d2d.load_detectron2_config(
        semseg_config_file(),
        [
            "MODEL.META_ARCHITECTURE",
            "OpenVocabSemanticSegmentor",
            "MODEL.SEM_SEG_HEAD.NAME",
            "OpenVocabSemSegHead",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES",
            "['p2', 'p3', 'p4', 'p5']",
            "MODEL.DISTILL.SEM_SEG.DENSE_TARGETS",
            "pixels",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.DISTILL.SEM_SEG.CONVS_DIM",
            "32",
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(path),
            "MODEL.DISTILL.SEM_SEG.TRAIN_LABEL_VALUES",
            "[1, 2]",
            "MODEL.DEVICE",
            "cpu",
        ],
    )


def _inputs(with_targets=True):
    out = []
    for h, w in ((96, 96), (64, 80)):
        sem = torch.zeros(h, w, dtype=torch.long)
        sem[: h // 2] = 1
        sem[h // 2 :, : w // 2] = 3  # novel: ignored by the cross entropy
        d = {"image": torch.rand(3, h, w) * 255, "sem_seg": sem, "height": h, "width": w}
        if with_targets:
            d["pixel_targets"] = F.normalize(torch.randn(D, h // 8, w // 8), dim=0)
        out.append(d)
    return out


def test_registry_builds_and_trains_with_distillation(cfg):
    from detectron2.modeling import build_model

    from distill.integrations.detectron2.sem_seg import OpenVocabSemanticSegmentor, OpenVocabSemSegHead

    model = build_model(cfg)
    assert isinstance(model, OpenVocabSemanticSegmentor) and isinstance(
        model.sem_seg_head, OpenVocabSemSegHead
    )
    model.train()
    losses = model(_inputs())
    assert set(losses) == {"loss_sem_seg", "loss_pixel_distill"}
    sum(losses.values()).backward()
    assert model.sem_seg_head.predictor.classifier.bg_embedding.grad is not None


def test_inference_any_vocabulary(cfg):
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    model.sem_seg_head.predictor.set_vocabulary(F.normalize(torch.randn(3, D), dim=-1), [1, 2, 3])
    with torch.no_grad():
        out = model(_inputs(with_targets=False))
    assert out[0]["sem_seg"].shape == (4, 96, 96) and out[1]["sem_seg"].shape == (4, 64, 80)
    values = model.sem_seg_head.predictor.predict(out[1]["sem_seg"][None])
    assert set(values.unique().tolist()) <= {0, 1, 2, 3}


def test_ce_only_with_plain_semantic_segmentor(cfg):
    from detectron2.modeling import build_model

    c = cfg.clone()
    c.defrost()
    c.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    c.MODEL.DISTILL.PIXEL_LOSS_WEIGHT = 0.0
    model = build_model(c).train()
    assert set(model(_inputs(with_targets=False))) == {"loss_sem_seg"}


def test_same_core_as_torchvision(cfg):
    """Both backends wrap the same core predictor class with the same settings."""
    from detectron2.modeling import build_model

    from distill.modeling.sem_seg import OpenVocabSemSegPredictor

    pred = build_model(cfg).sem_seg_head.predictor
    assert type(pred) is OpenVocabSemSegPredictor
    assert pred.label_map.class_values == [1, 2] and pred.label_map.background_value == 0
    assert pred.embed_head.in_strides == [4, 8, 16, 32] and pred.pixel_loss == cfg.MODEL.DISTILL.PIXEL_LOSS
    assert pred.classifier.temperature == cfg.MODEL.DISTILL.TEMPERATURE
