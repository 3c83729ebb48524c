"""The detectron2 backend behind the `Backend` protocol (distill.integrations.backend): detectron2's
DefaultTrainer, RPN and evaluators on the same config, data and teacher as the torchvision backend."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ...teacher.embeddings import ClassEmbeddings
from . import demo, proposals
from .builders import build_detector, load_detectron2_config
from .datasets import register_all
from .evaluation import flatten_ov_results
from .trainer import DistillTrainer, StrictCheckpointer, train_main


class Detectron2Backend:
    name = "detectron2"

    def load_config(self, config_file: str | None, opts: Sequence[str] = ()):
        return load_detectron2_config(config_file, list(opts))

    def register_datasets(self, root: str | os.PathLike) -> list[str]:
        return register_all(root)

    def train(self, cfg, progress: bool = True) -> None:
        if progress:
            setup_logger(name="detectron2")  # the trainer's progress lines (iteration, ETA, losses)
        seed_all_rng(cfg.SEED)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TEST = ()  # evaluation is the caller's; none at the end of training
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        trainer = DistillTrainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()

    def load_model(self, cfg, weights: str) -> torch.nn.Module:
        model = build_detector(cfg)
        StrictCheckpointer(model).load(weights)
        return model

    def iter_dataset_proposals(
        self, model, dicts: list[dict], min_size: int, max_size: int, top_k: int = 300, progress: bool = True
    ):
        return proposals.iter_dataset_proposals(model, dicts, min_size, max_size, top_k, progress)

    def evaluate(self, cfg, model, dataset: str) -> dict:
        one = cfg.clone()
        one.defrost()
        one.DATASETS.TEST = (dataset,)
        return flatten_ov_results(DistillTrainer.test(one, model))

    def load_for_inference(
        self, cfg, weights: str, vocabulary: ClassEmbeddings, novel: torch.Tensor | None = None
    ) -> torch.nn.Module:
        return demo.load_for_inference(cfg, weights, vocabulary, novel)

    def predict(self, model, cfg, record: dict) -> dict:
        return demo.predict(model, cfg, record)

    def train_net(self, args) -> int:
        return train_main(args)
