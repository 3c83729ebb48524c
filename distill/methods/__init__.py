"""Distillation methods behind one registry: MODEL.DISTILL.METHOD names one, and both backends' RoI heads, the
mappers, the trainers and the ONNX export run it through the open-vocabulary box predictor
(`distill.modeling.ov_predictor`) without naming it.

    vild_text       ViLD-text                 distill/methods/vild/
    vild            ViLD (text + image)       distill/methods/vild/
    vild_ensemble   ViLD ensemble             distill/methods/vild/
    fvlm            F-VLM (frozen teacher)    distill/methods/fvlm/
    fvit            F-ViT (F-VLM on a ViT)    distill/methods/fvlm/
    baron           BARON (bags of regions)   distill/methods/baron/

A method of one's own: a module that subclasses `DistillMethod` and decorates it with `register_method`,
named in MODEL.DISTILL.IMPORTS (or declared in the `distill.methods` entry-point group of an installed
package); see docs/extend.md. This package's top level imports no torch (config loading reads the registry).
"""

from __future__ import annotations

# registers the built-in methods, torch-free
from . import baron as _baron  # noqa: F401
from . import fvlm as _fvlm  # noqa: F401
from . import vild as _vild  # noqa: F401
from .registry import (
    ENTRY_POINT_GROUP,
    Key,
    MethodEntry,
    get_method_entry,
    import_module,
    import_modules,
    method_entries,
    method_names,
    register_lazy,
    register_method,
    unregister_method,
)

# the key of a training record (a mapper's output dict) holding the method's targets for that image
METHOD_TARGETS = "method_targets"

_LAZY = {
    "DistillMethod": ".base",
    "RoIBatch": ".base",
    "RoIOutputs": ".base",
    "TargetSource": ".base",
    "RegionTargets": ".targets",
    "RegionStoreSource": ".targets",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "METHOD_TARGETS",
    "Key",
    "MethodEntry",
    "attach_teacher",
    "build_method",
    "get_method_entry",
    "import_module",
    "import_modules",
    "method_class",
    "method_entries",
    "method_names",
    "register_lazy",
    "register_method",
    "target_source",
    "unregister_method",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_class(cfg) -> type:
    """The class of MODEL.DISTILL.METHOD."""
    return get_method_entry(cfg.MODEL.DISTILL.METHOD).load()


def build_method(cfg):
    """A fresh `DistillMethod` of MODEL.DISTILL.METHOD reading its node MODEL.DISTILL.<node>."""
    entry = get_method_entry(cfg.MODEL.DISTILL.METHOD)
    cls = entry.load()
    cls.check_config(cfg)
    method = cls(cfg.MODEL.DISTILL.get(entry.node))
    attach_teacher(method, cfg)
    return method


def attach_teacher(method, cfg) -> None:
    """Hand a method with `uses_teacher` the frozen teacher of MODEL.DISTILL.TEACHER (built once, here)."""
    if getattr(method, "uses_teacher", False):
        from ..teacher import create_teacher

        t = cfg.MODEL.DISTILL.TEACHER
        method.set_teacher(create_teacher(t.ARCH, t.PRETRAINED or None))


def target_source(cfg, is_train: bool):
    """What the mappers attach to each training record for MODEL.DISTILL.METHOD (None: nothing)."""
    return method_class(cfg).target_source(cfg, is_train)
