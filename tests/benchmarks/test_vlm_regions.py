"""benchmarks/vlm_regions.py on a tiny methods world: the crops and in-image rows of both splits, every top-1 a
percentage, and no novel column on the training split (its annotations have no novel class)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "vlm_regions.py"


def _run(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_vlm_regions_both_splits(tmp_path):
    world = tmp_path / "world"
    _run(
        "-m",
        "distill.data.synthetic",
        str(world),
        "--world",
        "methods",
        "--num-train",
        "6",
        "--num-val",
        "6",
        cwd=tmp_path,
    )
    out = {}
    for split in ("val", "train"):
        stdout = _run(
            str(SCRIPT),
            "--teacher",
            "methods-tiny-vit",
            "--world-root",
            str(world),
            "--images",
            "3",
            "--scales",
            "1",
            "--split",
            split,
            cwd=tmp_path,
        )
        out[split] = json.loads(stdout.strip().splitlines()[-1])
    for split, rec in out.items():
        assert rec["split"] == split and rec["images"] == 3
        assert set(rec["rows"]) == {"crops", "in image x1"}
        for row in rec["rows"].values():
            assert row["objects"] > 0
            assert 0.0 <= row["all"] <= 100.0 and (row["base"] is None or 0.0 <= row["base"] <= 100.0)
        cos = rec["crop_cosine"]
        assert -1.0 <= cos["other_class"] <= 1.0
        assert cos["same_class"] is None or -1.0 <= cos["same_class"] <= 1.0
    assert all(row["novel"] is None for row in out["train"]["rows"].values())
    # the validation split holds novel objects in a world of this size only by chance: a number or None
    assert all(row["novel"] is None or 0.0 <= row["novel"] <= 100.0 for row in out["val"]["rows"].values())
    # the crops of the zoo's ViT teacher name most of its objects (it is 75 % on the full validation split)
    assert out["val"]["rows"]["crops"]["all"] > 20.0
