"""Atomic checkpoints (fvcore's Checkpointer), their retention, the leftovers of a killed run, and the RNG
states a bit-identical resume needs."""

from __future__ import annotations

import io
import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from ....utils.checkpoint import read_checkpoint, upgrade_state_dict
from ....utils.errors import check_checkpoint_fits
from ....utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)
PERIODIC = re.compile(r"model_\d{7}\.pth")


class AtomicCheckpointer(Checkpointer):
    """fvcore's Checkpointer, but a checkpoint and the `last_checkpoint` tag are written atomically."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {
            "model": self.model.state_dict(),
            **{k: v.state_dict() for k, v in self.checkpointables.items()},
            **getattr(self, "meta", {}),
            **kwargs,
        }
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write_bytes(os.path.join(self.save_dir, f"{name}.pth"), buf.getvalue())
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename.encode())

    def _load_file(self, f: str) -> dict:
        return read_checkpoint(f)  # a zero-byte / truncated / foreign file: one line, not a traceback

    # tensors allowed to be missing (they keep their initial values): set for a training's MODEL.WEIGHTS only
    fresh_prefixes: tuple[str, ...] = ()

    def _load_model(self, checkpoint):
        """Strict: a checkpoint of another architecture is one clear error, not a half-loaded model."""
        if isinstance(checkpoint.get("model"), dict):
            checkpoint["model"] = upgrade_state_dict(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        fresh = check_checkpoint_fits(incompatible, self.fresh_prefixes)
        if fresh:
            self.logger.info(f"{len(fresh)} tensors of the method start fresh (not in the checkpoint)")
        return incompatible


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the `.*.partial` temporaries an interrupted (SIGKILLed) atomic write left under `folder`."""
    root = Path(folder)
    if not root.is_dir():
        return []
    gone = [p for p in root.rglob(".*.partial") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        logger.info("removed %d partial file(s) of an interrupted run in %s", len(gone), root)
    return gone


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Keep the newest `keep` periodic checkpoints (model_NNNNNNN.pth) of `folder`; 0 keeps all."""
    if keep <= 0:
        return []
    periodic = sorted(p for p in Path(folder).iterdir() if PERIODIC.fullmatch(p.name))
    old = periodic[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """This process's python, numpy and torch (CPU and CUDA) generator states, as weights_only-loadable data."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    """random.setstate wants tuples; a checkpoint may hand lists back."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
