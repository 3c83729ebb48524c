"""GETTING_STARTED.md's "Your own dataset" recipe, run as written: its fenced commands are read from the page (the
test breaks when the page drifts) and run in order in a folder that holds a small COCO-format dataset at its paths
(my/...), a small student checkpoint where the quickstart leaves its student, and links to configs/ and tools/.
Only size and iteration overrides are appended to the training commands."""

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL_STUDENT

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# a small student, two iterations at a time: appended to each train_net command (later overrides win)
TINY = [
    *SMALL_STUDENT,
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
]


def readme_commands() -> list[list[str]]:
    """The commands of the page section's bash blocks: continuation lines joined, comments dropped."""
    text = (REPO / "GETTING_STARTED.md").read_text()
    section = text.split("\n## Your own dataset\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "no bash block in GETTING_STARTED.md's 'Your own dataset'"
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(x) for x in lines if x.strip() and not x.lstrip().startswith("#")]


def _dataset(root: Path, synthetic_root: Path) -> None:
    """my/train.json + my/train_images, my/val.json + my/val_images, my/new_images (pictures without labels)."""
    my = root / "my"
    for split in ("train", "val"):
        shutil.copytree(synthetic_root / "images" / split, my / f"{split}_images")
        shutil.copy(synthetic_root / "annotations" / f"instances_{split}.json", my / f"{split}.json")
    (my / "new_images").mkdir()
    for p in sorted((synthetic_root / "images" / "val").iterdir())[:2]:
        shutil.copy(p, my / "new_images" / p.name)
    for name in ("configs", "tools"):
        (root / name).symlink_to(REPO / name)


def _student_checkpoint(root: Path, config: str) -> None:
    """A small student where the quickstart leaves its own, trained on another vocabulary (the json's base
    classes only) than the recipe's: fine-tuning swaps the text classifier's embeddings."""
    train = ClassEmbeddings.load(root / "my/train_classes.npy")
    cats = json.loads((root / "my/train.json").read_text())["categories"]
    base = [train.class_names.index(c["name"]) for c in cats if c.get("split") == "base"]
    ClassEmbeddings(train.embeddings[base], [train.class_names[i] for i in base], train.provenance).save(
        root / "base.npy"
    )
    out = root / "output/quickstart/vild"
    args = [
        *["--config-file", config, "--backend", "torchvision", "--no-progress"],
        *["DATASETS.TRAIN", '("coco:my/train.json:my/train_images",)', "DATASETS.TEST", "()"],
        *["MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", "base.npy", "MODEL.DISTILL.METHOD", "vild_text"],
        *[*TINY, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)],
    ]
    r = subprocess.run(
        [sys.executable, "tools/train_net.py", *args], cwd=root, env=ENV, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model_final.pth").is_file()


def _run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    assert cmd[0] == "python" and cmd[1].startswith("tools/"), cmd
    extra = TINY if cmd[1] == "tools/train_net.py" and "--eval-only" not in cmd else []
    r = subprocess.run(
        [sys.executable, *cmd[1:], *extra], cwd=root, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"{shlex.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _scores(stdout: str) -> dict:
    """The json line train_net prints after its table, checked to hold real numbers."""
    res = json.loads(stdout.strip().splitlines()[-1])
    aps = {k: v for k, v in res.items() if re.fullmatch(r"(box|mask)_AP50?(_base|_novel)?", k)}
    assert {"box_AP50_base", "box_AP50_novel", "mask_AP50"} <= aps.keys(), res
    assert all(isinstance(v, float) and math.isfinite(v) and 0 <= v <= 100 for v in aps.values()), aps
    return res


def test_the_readme_recipe_runs_as_written(tmp_path, synthetic_root):
    commands = readme_commands()
    tools = [c[1] for c in commands]
    assert tools == [
        "tools/dump_text_embeddings.py",
        "tools/dump_text_embeddings.py",
        "tools/train_net.py",
        "tools/train_net.py",
        "tools/demo.py",
    ], tools
    _dataset(tmp_path, synthetic_root)
    for cmd in commands[:2]:
        _run(cmd, tmp_path)
    train = commands[2]
    _student_checkpoint(tmp_path, train[train.index("--config-file") + 1])
    r = _run(train, tmp_path)
    trained = _scores(r.stdout)
    assert trained["dataset"] == "coco:my/val.json:my/val_images"
    r = _run(commands[3], tmp_path)  # --eval-only: the same checkpoint, the same numbers
    assert {k: v for k, v in _scores(r.stdout).items() if k != "dataset"} == {
        k: v for k, v in trained.items() if k != "dataset"
    }
    r = _run(commands[4], tmp_path)
    demo = Path(tmp_path / commands[4][commands[4].index("--output") + 1])
    pred = json.loads((demo / "predictions.json").read_text())
    assert [c["name"] for c in pred["categories"]] == ["cat", "dog", "bicycle"] and len(pred["images"]) == 2
