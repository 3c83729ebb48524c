"""The detector's training data: the training dicts and an endless, seeded, resumable stream of mapped batches.

The stream's position (per data-loader worker: epoch, place in that epoch's order, the mapper's RNG state) comes
back with every batch, so a checkpoint can hold it and a resumed run maps exactly the images, sizes and flips
the uninterrupted run would have.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...data.catalog import get_dataset
from ...data.datasets import filter_empty, remap_to_vocabulary
from ...data.sampling import repeat_factors, repeated_indices
from ...data.serialize import SerializedList
from ...teacher.embeddings import ClassEmbeddings
from ...utils.errors import DistillInputError
from .mapper import DatasetMapper, MapperConfig

logger = logging.getLogger(__name__)


def mapper_cfg(cfg, is_train: bool) -> MapperConfig:
    i = cfg.INPUT
    return MapperConfig(
        min_sizes=tuple(i.MIN_SIZE_TRAIN) if is_train else (i.MIN_SIZE_TEST,),
        max_size=i.MAX_SIZE_TRAIN if is_train else i.MAX_SIZE_TEST,
        is_train=is_train,
        flip_prob=0.5 if (is_train and i.RANDOM_FLIP == "horizontal") else 0.0,
        mask_on=cfg.MODEL.MASK_ON,
        lsj=_lsj(cfg) if is_train else None,
    )


def _lsj(cfg) -> tuple[int, float, float] | None:
    j = cfg.INPUT.LSJ
    return (j.SIZE, j.MIN_SCALE, j.MAX_SCALE) if j.ENABLED else None


def train_repeat_factors(cfg, dicts: list[dict]) -> np.ndarray | None:
    """DATALOADER.SAMPLER_TRAIN as detectron2 reads it: TrainingSampler (None) or RepeatFactorTrainingSampler."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return None
    if name != "RepeatFactorTrainingSampler":
        raise DistillInputError(
            f"DATALOADER.SAMPLER_TRAIN must be TrainingSampler or RepeatFactorTrainingSampler, got {name!r}"
        )
    return repeat_factors(dicts, cfg.DATALOADER.REPEAT_THRESHOLD)


def load_train_set(cfg, vocab: ClassEmbeddings) -> list[dict]:
    dicts = []
    for name in cfg.DATASETS.TRAIN:
        ds, meta = get_dataset(name)
        dicts += remap_to_vocabulary(ds, meta, vocab.class_names)
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_empty(dicts)
    if not dicts:
        raise DistillInputError(f"no training images with annotations in {list(cfg.DATASETS.TRAIN)}")
    return dicts


class TrainStream(torch.utils.data.IterableDataset):
    """Endless, seeded shuffles of this rank's share of the training dicts, mapped (one worker per slice).

    Yields (worker, position after this sample, mapped dict); `states` {worker: position} starts the workers
    where a checkpoint left them; `rotation` maps the data-loader's k-th worker to the stream's (k + rotation)-th,
    because a resumed loader starts with its first worker wherever the killed one was in its round robin.
    """

    def __init__(
        self,
        dicts,
        mapper_cfg,
        targets,
        seed,
        rank,
        world,
        states: dict | None = None,
        rotation: int = 0,
        repeat_factors: np.ndarray | None = None,
    ):
        # serialized: a list of dicts' objects would be copied into every worker (reference counts, gc)
        self.dicts = dicts if isinstance(dicts, SerializedList) else SerializedList(dicts)
        self.mapper_cfg, self.targets = mapper_cfg, targets
        self.repeat_factors = repeat_factors  # (N,) RepeatFactorTrainingSampler's factors, or None
        self.seed, self.rank, self.world = seed, rank, world
        self.states, self.rotation = dict(states or {}), rotation

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        nw = info.num_workers if info else 1
        wid = ((info.id if info else 0) + self.rotation) % nw
        mapper = DatasetMapper(self.mapper_cfg, self.targets, seed=self.seed * 1000 + self.rank * 100 + wid)
        epoch, pos = 0, 0
        if wid in self.states:
            epoch, pos, rng = self.states[wid]
            mapper.rng.setstate(_tuples(rng))
        while True:
            rng = np.random.default_rng([self.seed, epoch])
            order = (
                rng.permutation(len(self.dicts))
                if self.repeat_factors is None
                else repeated_indices(self.repeat_factors, rng)
            )
            mine = order[self.rank :: self.world][wid::nw].tolist()
            for p in range(pos, len(mine)):
                out = mapper(self.dicts[mine[p]])
                yield wid, (epoch, p + 1, mapper.rng.getstate()), out
            epoch, pos = epoch + 1, 0


def _collate(items: list) -> tuple:
    """A batch (one worker's consecutive samples) and where that worker is after it."""
    return [x[2] for x in items], (items[-1][0], items[-1][1])


class StreamLoader:
    """Batches of `TrainStream` through a DataLoader, with the stream's position as state.

    `start()` creates the loader (its workers start from the loaded state); `next()` gives a batch (list of
    mapped dicts); `state_dict()` is the position after the last batch handed out.
    """

    def __init__(
        self,
        dicts,
        mapper_cfg,
        targets,
        seed: int,
        rank: int,
        world: int,
        batch_size: int,
        num_workers: int,
        repeat_factors: np.ndarray | None = None,
    ):
        self.args = (SerializedList(dicts), mapper_cfg, targets, seed, rank, world)
        self.repeat_factors = repeat_factors
        self.batch_size, self.num_workers = batch_size, num_workers
        self.states: dict = {}
        self.consumed = 0  # batches handed out since iteration 0
        self._it = None

    def start(self) -> None:
        nw = max(self.num_workers, 1)
        stream = TrainStream(
            *self.args, states=self.states, rotation=self.consumed % nw, repeat_factors=self.repeat_factors
        )
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=self.batch_size,
            collate_fn=_collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        batch, (wid, state) = next(self._it)
        self.states[wid] = state
        self.consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {
            "workers": {int(k): v for k, v in self.states.items()},
            "consumed": self.consumed,
            "num_workers": self.num_workers,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_workers"] != self.num_workers:
            logger.warning(
                "the checkpoint's data stream ran with DATALOADER.NUM_WORKERS %d, this run has %d: the "
                "data order restarts",
                state["num_workers"],
                self.num_workers,
            )
            self.restart_at(state["consumed"])
            return
        self.states = {int(k): tuple(v) for k, v in state["workers"].items()}
        self.consumed = int(state["consumed"])

    def restart_at(self, iteration: int) -> None:
        """No saved position: a fresh order seeded with seed + iteration (the behaviour before positions)."""
        dicts, mcfg, targets, seed, rank, world = self.args
        self.args = (dicts, mcfg, targets, seed + iteration, rank, world)
        self.states, self.consumed = {}, 0


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
