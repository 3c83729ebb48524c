"""Tiny trained models for the export and web demo tests: a ViLD detector and a segmenter, a few steps on the
synthetic benchmark (the tests compare the exported graph with eager PyTorch, so the models need not be good)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data.synthetic import SYNTHETIC_CATEGORIES
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL_STUDENT

CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")
DIM = 128  # the tiny teacher's (the web demo encodes typed vocabularies with it)
# a soft classifier (temperature 0.1) and a low threshold: the parity checks need detections, which a
# few-step model at ViLD's temperature 0.01 has none of (its background takes every score)
SMALL_MODEL = [
    *SMALL_STUDENT,
    "INPUT.MAX_SIZE_TEST",
    "160",
    "TEST.DETECTIONS_PER_IMAGE",
    "30",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.005",
    "MODEL.DISTILL.TEMPERATURE",
    "0.1",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "60",
]
NAMES = [c["name"] for c in SYNTHETIC_CATEGORIES]


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export_vocab")
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(len(NAMES), DIM, generator=g), dim=1)
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    # random vectors recorded as the config's teacher's, which every loader checks the files against
    from distill.config import load_config

    t = load_config(CONFIG).MODEL.DISTILL.TEACHER
    ClassEmbeddings(emb, NAMES, {"teacher": {"arch": t.ARCH, "pretrained": t.PRETRAINED}}).save(d / "all.npy")
    ClassEmbeddings(emb[base], [NAMES[i] for i in base]).save(d / "base.npy")
    ClassEmbeddings(F.normalize(torch.randn(3, 16, generator=g), dim=1), NAMES[:3]).save(d / "dim16.npy")
    return d


@pytest.fixture(scope="session")
def detector_opts(vocab_dir) -> list[str]:
    """KEY VALUE overrides of CONFIG for the tiny detector."""
    return [
        *SMALL_MODEL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab_dir / "all.npy"),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(vocab_dir / "all.npy"),
    ]


@pytest.fixture(scope="session")
def detector_checkpoint(synthetic_root, vocab_dir, detector_opts, tmp_path_factory):
    """(cfg, path of a {"model": state_dict} checkpoint) after 3 AdamW steps on pairs of training images."""
    from distill.config import load_config
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.builders import build_detector
    from distill.integrations.torchvision.mapper import DatasetMapper, MapperConfig

    torch.manual_seed(0)
    cfg = load_config(CONFIG, detector_opts)
    model = build_detector(cfg, ClassEmbeddings.load(vocab_dir / "all.npy"))
    dicts, _ = synthetic_dataset(synthetic_root, "train")
    mapper = DatasetMapper(MapperConfig(min_sizes=(96,), max_size=160), seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for i in range(3):
        losses = model([mapper(d) for d in dicts[2 * i : 2 * i + 2]])
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    path = tmp_path_factory.mktemp("export_det") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return cfg, str(path)


@pytest.fixture(scope="session")
def segmenter_checkpoint(synthetic_root, vocab_dir, tmp_path_factory):
    """Path of a segmenter checkpoint after 2 cross-entropy steps (no flip test: the export has none)."""
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import (
        build_sem_seg_model,
        load_sem_seg_samples,
        load_semseg_config,
        save_segmenter,
        train_segmenter,
    )

    cfg = load_semseg_config(
        [
            "MODEL.FPN.OUT_CHANNELS",
            "16",
            "MODEL.DISTILL.SEM_SEG.CONVS_DIM",
            "16",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DISTILL.PIXEL_LOSS_WEIGHT",
            "0.0",
            "TEST.AUG.ENABLED",
            "False",
            "SOLVER.IMS_PER_BATCH",
            "2",
        ]
    )
    torch.manual_seed(0)
    vocab = ClassEmbeddings.load(vocab_dir / "all.npy")
    model = build_sem_seg_model(cfg, vocab, [c["id"] for c in SYNTHETIC_CATEGORIES])
    samples = load_sem_seg_samples(synthetic_dataset(synthetic_root, "train")[0][:4], 16)
    train_segmenter(cfg, model, samples, max_iter=2, progress=False, cache_body=False)
    path = tmp_path_factory.mktemp("export_seg") / "model_final.pth"
    save_segmenter(model, path, cfg)
    return cfg, str(path)
