"""benchmarks/baron_step.py end to end at a tiny size: every field of the JSON line present, every number finite,
BARON's parts adding up to its step."""

import json
import math
import os
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "baron_step.py"
PARTS = {
    "bag_sampling",
    "crops",
    "teacher_image_tower",
    "text_tower_forward",
    "text_tower_backward",
    "losses",
    "rest",
}
SUMMARY = {
    "step_ratio_to_vild",
    "memory_ratio_to_vild",
    "goal_step_ratio_at_most",
    "crops_fused_over_loop",
    "goal_crops_ratio_at_least",
    "teacher_forwards_per_image_baron",
    "teacher_forwards_per_image_vild",
    "teacher_forwards_ratio_vild_to_baron",
}
CROPS = {
    "crops_per_step",
    "fused_crops_per_s",
    "loop_crops_per_s",
    "roi_align_batched_crops_per_s",
    "fused_over_loop",
    "fused_over_roi_align_batched",
    "fused_kernel_compiled",
}


def _numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x


def test_baron_step_smoke():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    args = ["--size", "128", "--batch", "1", "--steps", "1", "--confident", "4", "--json"]
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert (line["size"], line["batch"], line["steps"], line["confident"]) == (128, 1, 1, 4)
    assert set(line["summary"]) == SUMMARY
    vild, baron = line["results"]["vild"], line["results"]["baron"]
    for r_ in (vild, baron):
        assert {"s_per_step", "peak_bytes", "trainable_params", "teacher_forwards_per_image"} <= set(r_)
        assert r_["s_per_step"] > 0 and r_["peak_bytes"] > 0
    assert vild["teacher_forwards_per_image"] == 600 and vild["teacher_scales"] == [1.0, 1.5]
    assert set(baron["parts_s_per_step"]) == PARTS == set(baron["parts_share"])
    assert math.isclose(sum(baron["parts_s_per_step"].values()), baron["s_per_step"], rel_tol=1e-6)
    assert all(baron["parts_s_per_step"][p] > 0 for p in PARTS - {"rest"})
    assert set(baron["crops"]) == CROPS
    # one teacher crop per bag, and the crops benchmark ran on the last step's bags
    assert baron["bags_per_image"] == baron["teacher_forwards_per_image"] >= 1
    assert baron["crops"]["crops_per_step"] >= 1 and baron["crops"]["fused_crops_per_s"] > 0
    numbers = list(_numbers(line))
    assert numbers and all(math.isfinite(x) for x in numbers)
