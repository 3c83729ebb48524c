"""`Trainer`: the training loop, with hooks (detectron2's SimpleTrainer / HookBase).

A step: next batch → losses (a dict of scalars) → finite check → backward (GradScaler under AMP) → optional
clipping → optimizer and scheduler step. The data source is an iterator with `state_dict()` / `load_state_dict()`
(its position in the stream); with the RNG states, the optimizer, the scheduler and the scaler, it is what a
checkpoint holds, so a resumed run continues exactly where the killed one was. SIGINT / SIGTERM stop the loop
after the step it is in: the hooks save a checkpoint (`HookBase.on_stop`) and `TrainingInterrupted` says where.
"""

from __future__ import annotations

import logging
import weakref
from typing import Callable, Sequence

import torch

from ....utils.checkpoint import last_checkpoint
from ....utils.interrupt import StopRequest, any_rank, stop_on_signals
from .checkpoint import rng_state, set_rng_state
from .distributed import dist_info

logger = logging.getLogger(__name__)


class HookBase:
    """Called by `Trainer.train`: before_train, then before_step / after_step around each iteration
    (`self.trainer.iter` is the iteration running, from 0), then after_train (also after an error). When a
    signal stops the loop early, on_stop comes after the step's after_step, on every rank."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def on_stop(self) -> str | None:
        """The loop stops early (a signal): a hook that saves a checkpoint returns its path."""
        return None


class Trainer:
    """The loop. `forward(model, batch)` returns the losses dict (default `model(batch)`); `clip(model)` clips
    the gradients (None: no clipping); `amp` runs the forward pass under CUDA autocast with a GradScaler.

    After each step: `iter` (that step's index), `losses` (its loss tensors) and `total_loss`. `resume_hint` ends
    the line of an interrupted run (how to continue from its checkpoint)."""

    resume_hint = "run the same command with --resume to continue"

    def __init__(
        self,
        model: torch.nn.Module,
        data,
        optimizer: torch.optim.Optimizer,
        scheduler,
        *,
        max_iter: int,
        forward: Callable | None = None,
        clip: Callable | None = None,
        amp: bool = False,
    ):
        self.model, self.data, self.optimizer, self.scheduler = model, data, optimizer, scheduler
        self.max_iter = int(max_iter)
        self.forward = forward or (lambda m, batch: m(batch))
        self.clip, self.amp = clip, bool(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iter = self.start_iter = 0
        self.losses: dict[str, torch.Tensor] = {}
        self.total_loss: torch.Tensor | None = None
        self.hooks: list[HookBase] = []
        self._resume_rng: dict | None = None

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = weakref.proxy(self)
                self.hooks.append(h)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """This process's part of a checkpoint beyond model / optimizer / scheduler."""
        return {"data": self.data.state_dict(), "rng": rng_state(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.data.load_state_dict(state["data"])
        self.scaler.load_state_dict(state["scaler"])
        self._resume_rng = state["rng"]  # set when the loop starts, after the data stream has started

    def resume(self, checkpointer, resume: bool) -> bool:
        """Continue from the checkpointer's last checkpoint when `resume` and there is one; True if so."""
        if not (resume and last_checkpoint(checkpointer.save_dir) is not None):  # a bad tag: one clear line
            return False
        extra = checkpointer.resume_or_load("", resume=True)
        self.start_iter = int(extra.get("iteration", -1)) + 1
        states = extra.get("trainer")
        rank, world = dist_info()
        if states is not None and len(states) == world:
            self.load_state_dict(states[rank])
        else:  # a checkpoint without the stream's position (another world size, an older version)
            logger.warning("the checkpoint does not hold this run's data position: the data order restarts")
            self.data.restart_at(self.start_iter)
        return True

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        self.data.start()
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        for h in self.hooks:
            h.before_train()
        try:
            with stop_on_signals() as stop:
                for it in range(self.start_iter, self.max_iter):
                    self.iter = it
                    for h in self.hooks:
                        h.before_step()
                    self.run_step()
                    for h in self.hooks:
                        h.after_step()
                    # every rank stops at the same step: the checkpoint gathers all their states. After the
                    # last step too: the caller's evaluation is not run
                    if any_rank(bool(stop)):
                        self._stop(stop)
        finally:
            for h in self.hooks:
                h.after_train()

    def _stop(self, stop: StopRequest) -> None:
        """Ask the hooks to save (the checkpoint of this step, resumable like a periodic one), then raise."""
        saved = [p for p in (h.on_stop() for h in self.hooks) if p]
        where = f"at iteration {self.iter + 1}/{self.max_iter}"
        raise stop.interrupted(where, saved[0] if saved else None, self.resume_hint)

    def run_step(self) -> None:
        batch = next(self.data)
        with torch.autocast("cuda", enabled=self.amp):
            losses = self.forward(self.model, batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"loss became {total.item()} at iteration {self.iter}: "
                f"{ {k: round(v.item(), 4) for k, v in losses.items()} }"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            self.clip(self.model)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.losses, self.total_loss = losses, total

    @property
    def is_last(self) -> bool:
        return self.iter + 1 == self.max_iter
