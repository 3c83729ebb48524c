"""Hooks of the `Trainer`: checkpoints (`CheckpointHook`), evaluation (`EvalHook`), metrics and log lines
(`MetricsWriter`: OUTPUT_DIR/metrics.json, OUTPUT_DIR/log.txt, TensorBoard when installed) and a progress bar
(`ProgressBar`, on a terminal only)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time
from typing import Callable

from ....utils.progress import RateMeter, on_terminal, progress_bar
from .checkpoint import prune_checkpoints
from .distributed import dist_info, gather_to_all
from .train_loop import HookBase

LOG = logging.getLogger("distill.train")  # the periodic lines: log.txt, and the console when no bar is drawn


class CheckpointHook(HookBase):
    """Every `period` iterations a checkpoint `model_{iter:07d}.pth`, at the end `final_name` (None: a
    periodic one only); each holds the model, optimizer, scheduler, the iteration and every rank's
    `Trainer.state_dict()` (data position, RNG states). `max_to_keep` > 0 keeps only the newest periodic ones.
    A run stopped by a signal saves `model_{iter:07d}.pth` of the step it finished, resumable the same way."""

    def __init__(
        self, checkpointer, period: int, max_to_keep: int = 0, final_name: str | None = "model_final"
    ):
        self.checkpointer, self.period = checkpointer, max(1, int(period))
        self.max_to_keep, self.final_name = int(max_to_keep), final_name

    def after_step(self) -> None:
        t = self.trainer
        periodic = (t.iter + 1) % self.period == 0
        if periodic or (t.is_last and self.final_name):
            self._save(self.final_name if (t.is_last and self.final_name) else f"model_{t.iter:07d}")

    def on_stop(self) -> str | None:
        """A signal stops the run: this step's checkpoint (unless after_step just saved it)."""
        t = self.trainer
        final = t.is_last and self.final_name
        name = self.final_name if final else f"model_{t.iter:07d}"
        if not (final or (t.iter + 1) % self.period == 0):
            self._save(name)
        save_dir = self.checkpointer.save_dir
        return os.path.join(save_dir, f"{name}.pth") if save_dir else None

    def _save(self, name: str) -> None:
        t = self.trainer
        states = gather_to_all(t.state_dict())  # every rank takes part
        self.checkpointer.save(name, iteration=t.iter, trainer=states)
        if dist_info()[0] == 0 and self.checkpointer.save_dir:
            prune_checkpoints(self.checkpointer.save_dir, self.max_to_keep)


class EvalHook(HookBase):
    """Every `period` iterations except the last (the caller evaluates the final model): `eval_function()` →
    {dataset: flat metrics}, written to the metrics file. The evaluation itself runs `inference_on_dataset`
    with a DatasetEvaluator-style object (reset / process(inputs, outputs) / evaluate)."""

    def __init__(self, period: int, eval_function: Callable[[], dict], writer: "MetricsWriter | None" = None):
        self.period, self.eval_function, self.writer = int(period), eval_function, writer

    def after_step(self) -> None:
        t = self.trainer
        if not self.period or (t.iter + 1) % self.period or t.is_last:
            return
        for name, metrics in self.eval_function().items():
            if self.writer is not None:
                self.writer.write({"iteration": t.iter + 1, "eval": name, **metrics})


class MetricsWriter(HookBase):
    """Every `period` iterations and at the last: one json line in OUTPUT_DIR/metrics.json (iteration, lr,
    total_loss, time_per_iter, each loss), the same in TensorBoard, and a readable line (with the ETA) in
    OUTPUT_DIR/log.txt and, when `console`, on stderr. Rank 0 only; log.txt also gets the package's log."""

    def __init__(self, output_dir: str, period: int = 20, console: bool = True, tensorboard: bool = True):
        self.output_dir, self.period, self.console = output_dir, max(1, int(period)), console
        self.tensorboard = tensorboard
        self.active = dist_info()[0] == 0
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._tb = None
        self.clock = time.perf_counter

    @property
    def metrics_file(self) -> str:
        return os.path.join(self.output_dir, "metrics.json")

    def before_train(self) -> None:
        if not self.active:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(self.output_dir, "log.txt"))
        fh.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%m/%d %H:%M:%S"))
        pkg = logging.getLogger("distill")
        self._pkg_level = pkg.level  # restored after training
        if pkg.level == logging.NOTSET or pkg.level > logging.INFO:
            pkg.setLevel(logging.INFO)
        self._add(pkg, fh)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False
        self._add(LOG, fh)
        if self.console:
            sh = logging.StreamHandler(sys.stderr)
            sh.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
            self._add(LOG, sh)
        self._tb = _tensorboard(self.output_dir) if self.tensorboard else None
        self._t0 = self._t_last = self.clock()
        self._start = self._iter_last = self.trainer.start_iter
        self._meter = RateMeter(self._start, self.clock)
        LOG.info(
            "training from iteration %d to %d in %s", self._start, self.trainer.max_iter, self.output_dir
        )

    def _add(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._handlers.append((logger, handler))

    def after_step(self) -> None:
        t = self.trainer
        if not self.active or not ((t.iter + 1) % self.period == 0 or t.is_last):
            return
        now = self.clock()
        rec = {
            "iteration": t.iter + 1,
            "lr": t.optimizer.param_groups[0]["lr"],
            "total_loss": t.total_loss.item(),
            # over the iterations since the last record (the last one may come before a full period)
            "time_per_iter": (now - self._t_last) / max(t.iter + 1 - self._iter_last, 1),
            **{k: v.item() for k, v in t.losses.items()},
        }
        self._t_last, self._iter_last = now, t.iter + 1
        self.write(rec)
        if self._tb is not None:
            for k, v in rec.items():
                self._tb.add_scalar(k, v, t.iter + 1)
        self._meter.update(t.iter + 1)  # the recent speed: a slow first period does not inflate every ETA
        eta = self._meter.eta(t.max_iter - t.iter - 1) or 0.0
        losses = "  ".join(f"{k}: {v.item():.4f}" for k, v in t.losses.items())
        LOG.info(
            "iter %d/%d  total_loss: %.4f  %s  lr: %.3g  %.3f s/it  eta: %s",
            t.iter + 1,
            t.max_iter,
            rec["total_loss"],
            losses,
            rec["lr"],
            self._meter.per_unit or 0.0,
            datetime.timedelta(seconds=round(eta)),
        )

    def write(self, record: dict) -> None:
        if self.active:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")

    def after_train(self) -> None:
        if self._tb is not None:
            self._tb.close()
        for logger, h in self._handlers:
            logger.removeHandler(h)
            h.close()
        self._handlers = []
        if self.active:
            logging.getLogger("distill").setLevel(self._pkg_level)


class ProgressBar(HookBase):
    """A tqdm bar with the loss and the learning rate, on rank 0 and a terminal only (`on_terminal`)."""

    def __init__(self, desc: str = "train", progress: bool = True, period: int = 20):
        self.desc, self.period = desc, max(1, int(period))
        self.enabled = on_terminal(progress) and dist_info()[0] == 0
        self.bar = None

    def before_train(self) -> None:
        t = self.trainer
        if self.enabled:
            self.bar = progress_bar(
                None, True, initial=t.start_iter, total=t.max_iter, desc=self.desc, dynamic_ncols=True
            )

    def after_step(self) -> None:
        if self.bar is None:
            return
        t = self.trainer
        self.bar.update(1)
        if (t.iter + 1) % self.period == 0 or t.is_last:
            self.bar.set_postfix(
                loss=f"{t.total_loss.item():.3f}", lr=f"{t.optimizer.param_groups[0]['lr']:.2g}"
            )

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tensorboard(output_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(os.path.join(output_dir, "tensorboard"))


def standard_hooks(
    checkpointer,
    cfg,
    output_dir: str,
    progress: bool,
    desc: str = "train",
    final_name: str | None = "model_final",
    eval_function: Callable[[], dict] | None = None,
) -> list:
    """Checkpoints, evaluation (TEST.EVAL_PERIOD, when `eval_function`), metrics and the bar, in that order."""
    s = cfg.SOLVER
    bar = ProgressBar(desc, progress, s.LOG_PERIOD)
    writer = MetricsWriter(output_dir, s.LOG_PERIOD, console=not bar.enabled)
    evals = (
        EvalHook(cfg.TEST.EVAL_PERIOD, eval_function, writer)
        if eval_function and cfg.TEST.EVAL_PERIOD
        else None
    )
    return [
        CheckpointHook(checkpointer, s.CHECKPOINT_PERIOD, s.CHECKPOINT_MAX_TO_KEEP, final_name),
        writer,
        evals,
        bar,
    ]
