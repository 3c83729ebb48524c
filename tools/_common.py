"""Shared helpers of the command-line tools (path setup, dataset root)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tools run from a checkout without installing too
    sys.path.insert(0, str(REPO))


def datasets_root(arg: str | None) -> Path:
    """--datasets-root, else $DISTILL_DATASETS, else ./datasets."""
    return Path(arg or os.environ.get("DISTILL_DATASETS") or "datasets")
