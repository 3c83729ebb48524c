"""One source of defaults (`defaults.py`, yacs with a comment per key, as detectron2's): `get_cfg()` is the
torchvision backend's full config with detectron2's key names, so one yaml serves both backends;
`add_distill_config(cfg)` puts MODEL.DISTILL under any yacs / fvcore / detectron2 CfgNode.
"""

from __future__ import annotations

import os
from typing import Sequence

import yaml
from fvcore.common.config import CfgNode

from ..utils.errors import DistillInputError
from .defaults import _C, DISTILL_DEFAULTS


def _as(node_cls: type, node: CfgNode) -> CfgNode:
    """A copy of `node` made of `node_cls` nodes: yacs merges a yaml only into nodes of its own CfgNode class."""
    return node_cls({k: _as(node_cls, v) if isinstance(v, CfgNode) else v for k, v in node.items()})


def add_distill_config(cfg: CfgNode) -> CfgNode:
    """Add MODEL.DISTILL (and nothing else) to an existing config, e.g. detectron2's get_cfg()."""
    cfg.MODEL.DISTILL = _as(type(cfg), DISTILL_DEFAULTS)  # detectron2's CfgNode is a subclass: keep its type
    return cfg


def get_cfg() -> CfgNode:
    """Full default config of the torchvision backend (a fresh copy)."""
    return _C.clone()


def load_config(
    config_file: str | None = None, overrides: Sequence[str] = (), base: CfgNode | None = None
) -> CfgNode:
    """Defaults ← yaml (with `_BASE_` chains) ← KEY VALUE overrides; unknown keys are one clear error."""
    cfg = (base or get_cfg()).clone()
    if config_file:
        if not os.path.isfile(config_file):
            raise DistillInputError("config file not found", config_file)
        try:
            cfg.merge_from_file(config_file, allow_unsafe=False)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise DistillInputError(
                f"not valid yaml ({getattr(e, 'problem', None) or type(e).__name__}{where})", config_file
            ) from None
        except OSError as e:  # a _BASE_ that is missing or unreadable
            raise DistillInputError(
                f"cannot read the config ({e.strerror}: {e.filename})", config_file
            ) from None
        except KeyError as e:
            raise DistillInputError(f"unknown config key {_key(e)}", config_file) from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad config value ({e})", config_file) from None
    if overrides:
        if len(overrides) % 2:
            raise DistillInputError(f"overrides come in KEY VALUE pairs; got {len(overrides)} items")
        try:
            cfg.merge_from_list(list(overrides))
        except (KeyError, AssertionError) as e:
            raise DistillInputError(f"unknown config key {_key(e)} on the command line") from None
        except (ValueError, TypeError) as e:
            raise DistillInputError(f"bad command-line config value ({e})") from None
    cfg.freeze()
    return cfg


def _key(e: BaseException) -> str:
    msg = str(e.args[0]) if e.args else str(e)
    for prefix in ("Non-existent config key: ", "Non-existent key: "):
        msg = msg.replace(prefix, "")
    return msg.strip("'\"")


def check_schedule(cfg) -> list[str]:
    """Warnings for a solver schedule that trains at a tiny learning rate throughout (a MAX_ITER override below
    the yaml's WARMUP_ITERS: AP 0 with exit 0). Returns the warning lines (printed by the caller)."""
    s = cfg.SOLVER
    warn = []
    if s.WARMUP_ITERS > 0 and s.MAX_ITER < s.WARMUP_ITERS:
        warn.append(
            f"SOLVER.MAX_ITER {s.MAX_ITER} is below SOLVER.WARMUP_ITERS {s.WARMUP_ITERS}: the whole run is "
            f"warm-up and never reaches BASE_LR {s.BASE_LR:g}; lower SOLVER.WARMUP_ITERS with MAX_ITER"
        )
    return warn
