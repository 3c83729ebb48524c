"""Inference on images with any vocabulary for the torchvision backend (the Backend protocol's
load_for_inference and predict)."""

from __future__ import annotations

import torch

from ...teacher.embeddings import ClassEmbeddings
from ...utils.device import check_device
from .builders import build_detector
from .mapper import DatasetMapper, MapperConfig
from .trainer import AtomicCheckpointer


def load_for_inference(cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None):
    """The checkpoint's model scoring `vocabulary`: the training class embeddings are not needed (they are no
    weights), so it runs from anywhere."""
    model = build_detector(cfg, vocabulary).to(check_device(cfg.MODEL.DEVICE, "MODEL.DEVICE"))
    AtomicCheckpointer(model, save_to_disk=False).load(str(weights), checkpointables=[])
    model.roi_heads.set_vocabulary(vocabulary, novel)
    return model.eval()


@torch.no_grad()
def predict(model, cfg, d: dict) -> dict:
    """One dataset-style dict ({file_name, height, width, image_id}) → detections in original pixels."""
    return model([inference_mapper(cfg)(d)])[0]


def inference_mapper(cfg) -> DatasetMapper:
    """The test-time mapper of a picture: INPUT's test size rule, no annotations read."""
    return DatasetMapper(
        MapperConfig(
            min_sizes=(cfg.INPUT.MIN_SIZE_TEST,),
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            is_train=False,
            mask_on=False,
        )
    )
