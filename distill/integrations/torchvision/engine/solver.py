"""Optimizer parameter groups, gradient clipping and learning-rate schedules as detectron2 reads SOLVER.*."""

from __future__ import annotations

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
)

from ....modeling.heads import no_weight_decay_params
from ....utils.errors import DistillInputError
from ...shared import build_optimizer as _core_optimizer

_NORM_TYPES = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


def optimizer_param_groups(cfg, model: torch.nn.Module) -> list[dict]:
    """detectron2's weight-decay rules (get_default_optimizer_params): biases decay with SOLVER.WEIGHT_DECAY_BIAS
    when it is set, other normalisation parameters with SOLVER.WEIGHT_DECAY_NORM, the rest with WEIGHT_DECAY;
    parameters a module lists in `no_weight_decay()` never decay (the background embedding: normalised in use)."""
    s = cfg.SOLVER
    no_decay = no_weight_decay_params(model)
    groups: dict[float, list] = {}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if id(p) in no_decay:
                wd = 0.0
            elif name == "bias" and s.WEIGHT_DECAY_BIAS is not None:
                wd = s.WEIGHT_DECAY_BIAS
            elif isinstance(module, _NORM_TYPES):
                wd = s.WEIGHT_DECAY_NORM
            else:
                wd = s.WEIGHT_DECAY
            groups.setdefault(float(wd), []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in groups.items()]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER (the core's choice) over `optimizer_param_groups`."""
    return _core_optimizer(cfg, optimizer_param_groups(cfg, model))


def clip_gradients(cfg, model: torch.nn.Module) -> None:
    """SOLVER.CLIP_GRADIENTS as detectron2 reads it: "value" clips each element, "norm" the norm of each
    parameter on its own, "full_model" the norm of all gradients together."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    params = [p for p in model.parameters() if p.grad is not None]
    if c.CLIP_TYPE == "value":
        torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
    elif c.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, c.CLIP_VALUE, c.NORM_TYPE)
    elif c.CLIP_TYPE == "full_model":
        torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
    else:
        raise DistillInputError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be value, norm or full_model, got {c.CLIP_TYPE!r}"
        )


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    s, max_iter = cfg.SOLVER, max(1, cfg.SOLVER.MAX_ITER)
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x < max_iter]
        sched = MultiStepParamScheduler(
            [s.GAMMA**k for k in range(len(steps) + 1)], milestones=steps, num_updates=max_iter
        )
    elif s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        sched = CosineParamScheduler(1.0, 0.0)
    else:
        raise DistillInputError("SOLVER.LR_SCHEDULER_NAME must be WarmupMultiStepLR or WarmupCosineLR")
    sched = _with_warmup(sched, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / max_iter, 1.0))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: sched(min(it, max_iter - 1) / max_iter))


def _with_warmup(sched, factor: float, length: float):
    """Linear warmup from factor × sched(0) to sched(length), then `sched` (detectron2's warmup)."""
    if length <= 0:
        return sched
    warm = LinearParamScheduler(factor * sched(0.0), sched(length))
    return CompositeParamScheduler(
        [warm, sched], lengths=[length, 1 - length], interval_scaling=["rescaled", "fixed"]
    )


def lr_at(cfg, it: int) -> float:
    """Learning rate of the schedule at iteration `it` (for tests and plots)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(it):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]
