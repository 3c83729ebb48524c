"""The configs shipped inside the package (the repository's configs/, see setup.py)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..utils.errors import DistillInputError


def configs_root() -> Path:
    return Path(str(resources.files("distill.model_zoo"))) / "configs"


def get_config_file(name: str) -> str:
    """Path of a shipped config, e.g. "synthetic/vild_r18_fpn_quick.yaml" (a path below configs/)."""
    root = configs_root()
    path = root / name
    if not path.is_file():
        have = sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml")) if root.is_dir() else []
        raise DistillInputError(
            f"no shipped config {name!r} (shipped: {', '.join(have) or 'none; reinstall distill'})"
        )
    return str(path)
