"""tools/train_net.py on Ctrl-C / SIGTERM: the step in progress is saved as a checkpoint, one line says where and
how to continue, the exit code is the shell's 128 + signal, and --resume continues from that checkpoint."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from distill.data.synthetic import SYNTHETIC_CATEGORIES
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL_STUDENT

CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def base_vocab(tmp_path_factory):
    names = [c["name"] for c in SYNTHETIC_CATEGORIES if c["split"] == "base"]
    emb = F.normalize(torch.randn(len(names), 32, generator=torch.Generator().manual_seed(0)), dim=1)
    return ClassEmbeddings(emb, names).save(tmp_path_factory.mktemp("vocab") / "base.npy")


def _cmd(backend, out, synthetic_root, vocab, *extra):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    return [
        *[sys.executable, str(REPO / "tools/train_net.py"), "--config-file", CONFIG, "--backend", backend],
        "--no-progress",
        *extra,
        *SMALL_STUDENT,
        *["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "DATASETS.TEST", "()"],
        *["MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", str(vocab), "MODEL.DISTILL.METHOD", "vild_text"],
        *["DATASETS.ROOT", str(synthetic_root.parent), "DATALOADER.NUM_WORKERS", "0"],
        *["SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(out)],
    ]


@pytest.mark.parametrize(
    "backend,signum",
    [
        pytest.param("torchvision", signal.SIGINT, id="torchvision-SIGINT"),
        pytest.param("torchvision", signal.SIGTERM, id="torchvision-SIGTERM"),
        pytest.param("detectron2", signal.SIGINT, id="detectron2-SIGINT", marks=pytest.mark.detectron2),
    ],
)
def test_signal_saves_the_step_and_resume_continues(tmp_path, synthetic_root, base_vocab, backend, signum):
    if backend == "detectron2":
        pytest.importorskip("detectron2", reason="detectron2 is not installed")
    out = tmp_path / "out"
    p = subprocess.Popen(
        _cmd(backend, out, synthetic_root, base_vocab, "SOLVER.MAX_ITER", "1000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.time() + 300
    while not (out / "last_checkpoint").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the first periodic checkpoint: training is under way
    p.send_signal(signum)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signum, err[-3000:]
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(
        rf"interrupted: {signum.name} at iteration (\d+)/1000: checkpoint saved to (\S+); "
        r"run the same command with --resume to continue",
        last,
    )
    assert m, err[-3000:]
    stopped, saved = int(m[1]), m[2]
    assert os.path.isfile(saved) and saved == str(out / f"model_{stopped - 1:07d}.pth")
    assert (out / "last_checkpoint").read_text().strip() == os.path.basename(saved)
    assert "Traceback" not in err and not (out / "model_final.pth").exists()
    resumed = subprocess.run(
        _cmd(backend, out, synthetic_root, base_vocab, "--resume", "SOLVER.MAX_ITER", str(stopped + 1)),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    if backend == "torchvision":  # one more iteration, after the saved one
        assert f"training from iteration {stopped} to {stopped + 1}" in resumed.stderr
        lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
        assert lines[-1]["iteration"] == stopped + 1
