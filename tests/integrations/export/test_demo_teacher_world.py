"""The demo with a student of the synthetic-only tiny teacher: a photo and the words "cat" each give one
warning line naming a real teacher; the synthetic world's own images and names give none."""

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

from .conftest import CONFIG


def _demo(weights, opts, image, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": str(out.parent / "cache")}
    args = ["--config-file", CONFIG, "--backend", "torchvision", "--weights", weights]
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/demo.py"),
            *args,
            "--input",
            image,
            "--output",
            out,
            *extra,
            *opts,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stderr.splitlines() if "synthetic-tiny-teacher was trained only on" in ln]


def test_demo_on_a_photo_with_other_words_says_so_once(
    detector_checkpoint, detector_opts, synthetic_root, tmp_path
):
    _, weights = detector_checkpoint
    image = synthetic_root / "images" / "val" / "000001.png"
    assert _demo(weights, detector_opts, image, tmp_path / "bench") == []
    photos = tmp_path / "photos"  # outside any synthetic world: a photo, for all the demo knows
    photos.mkdir()
    for name in ("cat.png", "dog.png"):
        shutil.copy(image, photos / name)
    lines = _demo(weights, detector_opts, photos, tmp_path / "out", "--custom-vocabulary", "cat,star")
    assert len(lines) == 2, lines
    assert sum("'cat' is outside its vocabulary" in ln for ln in lines) == 1
    assert sum("is not one of them" in ln for ln in lines) == 1
    assert all("--teacher ViT-B-32 --pretrained openai" in ln for ln in lines)
