"""Building the documentation site (mkdocs.yml) in a test: the pages of the repository, or a copy of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def require_toolchain() -> None:
    """Skip, saying why, where the docs toolchain is missing (`make install` installs it)."""
    for module in ("mkdocs", "material", "mkdocstrings"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[docs]')")


# what the site is made of, besides the package the API reference reads (docs/hooks/repo_pages.py: ROOT_FILES)
SITE_SOURCES = (
    "mkdocs.yml",
    "README.md",
    "INSTALL.md",
    "GETTING_STARTED.md",
    "ARCHITECTURE.md",
    "MODEL_ZOO.md",
    "CHANGELOG.md",
    "datasets/README.md",
    "tools/web_demo.png",
    "docs",
)


def build_site(root: Path, out: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of ROOT/mkdocs.yml into OUT (no network: nothing in the config fetches)."""
    require_toolchain()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_site_sources(dst: Path) -> Path:
    """A copy of the site's pages and config in DST, the package linked (the API reference reads it)."""
    for rel in SITE_SOURCES:
        src, to = REPO / rel, dst / rel
        to.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, to)
    (dst / "distill").symlink_to(REPO / "distill")
    return dst
