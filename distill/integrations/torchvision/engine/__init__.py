"""The torchvision backend's training engine, in the manner of detectron2's `SimpleTrainer` / `HookBase`: one
loop (`Trainer`) that the detector and the segmenter both run, and hooks for checkpoints (with the data stream's
position and the RNG states, so a resumed run is bit-identical), evaluation, metrics and progress.

    trainer = Trainer(model, data, optimizer, scheduler, max_iter=cfg.SOLVER.MAX_ITER)
    trainer.register_hooks([CheckpointHook(ckpt, period), MetricsWriter(out), ProgressBar()])
    trainer.resume_or_load(ckpt, resume=True)
    trainer.train()
"""

from .checkpoint import AtomicCheckpointer, remove_partial_files
from .distributed import dist_info, setup_distributed, unwrap
from .hooks import CheckpointHook, EvalHook, MetricsWriter, ProgressBar
from .solver import build_lr_scheduler, build_optimizer, clip_gradients, lr_at, optimizer_param_groups
from .train_loop import HookBase, Trainer

__all__ = [
    "AtomicCheckpointer",
    "CheckpointHook",
    "EvalHook",
    "HookBase",
    "MetricsWriter",
    "ProgressBar",
    "Trainer",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "dist_info",
    "lr_at",
    "optimizer_param_groups",
    "remove_partial_files",
    "setup_distributed",
    "unwrap",
]
