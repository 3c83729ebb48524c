"""The open_clip teacher: text, region and dense pixel embeddings; class-embedding files; prompt sets.

Names load on first use (PEP 562): a tool's `--help` that imports `distill.teacher.prompts` does not pay for
torch and open_clip."""

from __future__ import annotations

import importlib

_WHERE = {
    "ClassEmbeddings": "embeddings",
    "TEMPLATE_SETS": "prompts",
    "build_prompts": "prompts",
    "Teacher": "teacher",
    "check_boxes": "teacher",
    "create_teacher": "teacher",
    "center_square": "crops",
    "crop_resize_normalize": "crops",
    "scale_boxes": "crops",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
