import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(seed=3, num_train=24, num_val=12, image_size=96)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark, made once per test session."""
    from distill.data.synthetic import SyntheticConfig, generate

    return generate(tmp_path_factory.mktemp("synthetic") / "bench", SyntheticConfig(**SMALL), progress=False)


@pytest.fixture
def synthetic_copy(synthetic_root, tmp_path) -> Path:
    """A private copy a test may modify."""
    dst = tmp_path / "bench"
    shutil.copytree(synthetic_root, dst)
    return dst


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)
