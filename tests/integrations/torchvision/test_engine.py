"""The torchvision engine: a run SIGKILLed and resumed equals an uninterrupted one bit for bit, its leftovers
are removed, checkpoints are pruned, a log file and readable periodic lines are written; the segmenter on the
same engine resumes identically and trains in a 2-process gloo group."""

import json
import os
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
TINY = [
    *SMALL_STUDENT,
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
    "DATASETS.TEST",
    "()",
    "SOLVER.LOG_PERIOD",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    emb = F.normalize(torch.randn(len(names), 32, generator=torch.Generator().manual_seed(0)), dim=1)
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    ClassEmbeddings(emb[base], [names[i] for i in base]).save(d / "base.npy")
    return d / "base.npy"


def _cmd(out, synthetic_root, vocab, flags=(), opts=()):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    return [
        sys.executable,
        str(REPO / "tools/train_net.py"),
        "--config-file",
        CONFIG,
        "--backend",
        "torchvision",
        *flags,
        *TINY,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        str(vocab),
        "MODEL.DISTILL.METHOD",
        "vild_text",
        "DATASETS.ROOT",
        str(synthetic_root.parent),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "8",
        "OUTPUT_DIR",
        str(out),
        *opts,
    ]


# the checkout under test (PYTHONPATH), where it is not the installed one
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"} | {
    k: v for k, v in os.environ.items() if k == "PYTHONPATH"
}


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_sigkilled_run_resumes_bit_identical_and_cleans_up(tmp_path, synthetic_root, vocab):
    # uninterrupted, progress off: periodic readable lines instead of a bar; only the newest periodic checkpoint
    a = subprocess.run(
        _cmd(
            tmp_path / "a",
            synthetic_root,
            vocab,
            ["--no-progress"],
            ["SOLVER.CHECKPOINT_MAX_TO_KEEP", "1"],
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert a.returncode == 0, a.stderr[-3000:]
    assert "iter 8/8" in a.stderr and "eta:" in a.stderr and "iter 4/8" in a.stderr
    assert sorted(p.name for p in (tmp_path / "a").glob("model_*.pth")) == [
        "model_0000005.pth",
        "model_final.pth",
    ]
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "iter 2/8" in log and "iter 8/8" in log
    # the same run, SIGKILLed once its second checkpoint is on disk, then resumed
    b_out = tmp_path / "b"
    p = subprocess.Popen(
        _cmd(b_out, synthetic_root, vocab), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    deadline = time.time() + 600
    while not (b_out / "model_0000003.pth").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (b_out / "model_final.pth").exists(), "the run finished before it was killed"
    leftover = b_out / ".model_0000005.pth.abc123.partial"  # what a kill during a checkpoint write leaves
    leftover.write_bytes(b"half")
    r = subprocess.run(
        _cmd(b_out, synthetic_root, vocab, ["--resume"]), capture_output=True, text=True, env=ENV, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not leftover.exists()
    assert "\r" not in r.stderr and "iter 8/8" in r.stderr  # redirected output: lines, not a tqdm bar
    wa, wb = _weights(tmp_path / "a" / "model_final.pth"), _weights(b_out / "model_final.pth")
    assert wa.keys() == wb.keys()
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert diff == 0.0, f"resumed weights differ by up to {diff}"
    resumed = [json.loads(x) for x in (b_out / "metrics.json").read_text().splitlines()]
    assert resumed[-1]["iteration"] == 8


def _seg_setup(synthetic_root, n=6):
    from distill.data import synthetic_dataset
    from distill.integrations.torchvision.sem_seg import load_sem_seg_samples, load_semseg_config

    dicts, meta = synthetic_dataset(synthetic_root, "train")
    samples = load_sem_seg_samples(dicts[:n], max(meta.category_ids) + 1)
    g = torch.Generator().manual_seed(0)
    vocab = ClassEmbeddings(
        F.normalize(torch.randn(len(meta.category_ids), 16, generator=g), dim=-1), list(meta.thing_classes)
    )
    targets = {s["image_id"]: torch.randn(16, 12, 12, generator=g).half() for s in samples}
    cfg = load_semseg_config(
        [
            "MODEL.FPN.OUT_CHANNELS",
            "16",
            "MODEL.DISTILL.SEM_SEG.CONVS_DIM",
            "16",
            "SOLVER.IMS_PER_BATCH",
            "4",
            "MODEL.WEIGHTS",
            "",
            "SOLVER.WARMUP_ITERS",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "2",
            "SOLVER.LOG_PERIOD",
            "2",
        ]
    )
    return cfg, vocab, list(meta.category_ids), samples, targets


def _seg_model(cfg, vocab, ids):
    from distill.integrations.torchvision.sem_seg import build_sem_seg_model

    torch.manual_seed(0)
    return build_sem_seg_model(cfg, vocab, ids)


def test_segmenter_resumes_bit_identical(tmp_path, synthetic_root, monkeypatch):
    from distill.integrations.torchvision.engine import Trainer
    from distill.integrations.torchvision.sem_seg import train_segmenter

    cfg, vocab, ids, samples, targets = _seg_setup(synthetic_root)
    whole = _seg_model(cfg, vocab, ids)
    train_segmenter(cfg, whole, samples, targets, max_iter=7, progress=False, output_dir=tmp_path / "a")
    assert (tmp_path / "a" / "model_0000005.pth").is_file() and "iter 7/7" in (
        tmp_path / "a" / "log.txt"
    ).read_text()

    step = Trainer.run_step

    def killed_after_four(self):
        if self.iter == 4:
            raise KeyboardInterrupt  # the process dies after the checkpoint of iteration 3
        step(self)

    monkeypatch.setattr(Trainer, "run_step", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(
            cfg,
            _seg_model(cfg, vocab, ids),
            samples,
            targets,
            max_iter=7,
            progress=False,
            output_dir=tmp_path / "b",
        )
    monkeypatch.setattr(Trainer, "run_step", step)
    resumed = _seg_model(cfg, vocab, ids)
    train_segmenter(
        cfg, resumed, samples, targets, max_iter=7, progress=False, output_dir=tmp_path / "b", resume=True
    )
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.json").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [2, 4, 6, 7]  # 2, 4 before the kill; 6, 7 after


def _ddp_worker(rank, root, out, port):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    from distill.integrations.torchvision.sem_seg import train_segmenter

    cfg, vocab, ids, samples, targets = _seg_setup(root)
    model = _seg_model(cfg, vocab, ids)
    train_segmenter(cfg, model, samples, targets, max_iter=3, progress=False, output_dir=out)
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_segmenter_two_process_gloo(tmp_path, synthetic_root):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _ddp_worker, args=(synthetic_root, str(tmp_path), port), nprocs=2, start_method="spawn"
    )
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP kept the replicas in step
    assert (tmp_path / "model_0000001.pth").is_file() and not (tmp_path / "model_0000002.pth").exists()
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert lines[-1]["iteration"] == 3  # rank 0 writes alone


class _Steps:
    """A data source of constant batches (state: nothing)."""

    def start(self):
        pass

    def __next__(self):
        return torch.ones(2, 3)

    def state_dict(self):
        return {}


def test_metrics_time_per_iter_counts_the_iterations_since_the_last_record(tmp_path, monkeypatch):
    from distill.integrations.torchvision.engine import HookBase, MetricsWriter, Trainer
    from distill.integrations.torchvision.engine import hooks as hooks_module

    clock = [0.0]

    class Tick(HookBase):  # each step takes one second of a fake clock
        def after_step(self):
            clock[0] += 1.0

    monkeypatch.setattr(hooks_module.time, "perf_counter", lambda: clock[0])
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        _Steps(),
        opt,
        torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0),
        max_iter=6,
        forward=lambda m, x: {"loss": m(x).pow(2).mean()},
    )
    trainer.register_hooks([Tick(), MetricsWriter(str(tmp_path), period=4, console=False, tensorboard=False)])
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [4, 6]
    assert [r["time_per_iter"] for r in records] == [1.0, 1.0]  # the last: 2 s over 2 iterations, not over 4


def test_metrics_eta_follows_the_recent_speed(tmp_path, monkeypatch, caplog):
    """A slow first period (10 s per step) then 1 s per step: the logged ETA is the recent speed's."""
    import logging
    import re

    from distill.integrations.torchvision.engine import HookBase, MetricsWriter, Trainer
    from distill.integrations.torchvision.engine import hooks as hooks_module

    clock = [0.0]

    class Tick(HookBase):
        def after_step(self):
            clock[0] += 10.0 if self.trainer.iter < 4 else 1.0

    monkeypatch.setattr(hooks_module.time, "perf_counter", lambda: clock[0])
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        _Steps(),
        opt,
        torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0),
        max_iter=40,
        forward=lambda m, x: {"loss": m(x).pow(2).mean()},
    )
    writer = MetricsWriter(str(tmp_path), period=4, console=True, tensorboard=False)
    trainer.register_hooks([Tick(), writer])
    with caplog.at_level(logging.INFO):
        hooks_module.LOG.addHandler(caplog.handler)
        try:
            trainer.train()
        finally:
            hooks_module.LOG.removeHandler(caplog.handler)
    etas = re.findall(r"iter (\d+)/40 .* eta: (\d+):(\d\d):(\d\d)", caplog.text)
    it, h, m, s = map(int, next(e for e in etas if e[0] == "28"))
    assert 12 <= 3600 * h + 60 * m + s <= 16, etas  # 12 steps left at ~1 s (whole-run average: 24 s)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resumes_bit_identical(tmp_path, synthetic_root, signum):
    """SIGINT / SIGTERM between periodic checkpoints: the step in progress finishes, its checkpoint is written, the
    run stops with one line naming it, and a resume from it ends where an uninterrupted run ends."""
    from distill.integrations.torchvision.engine import HookBase
    from distill.integrations.torchvision.sem_seg import train_segmenter
    from distill.utils.checkpoint import last_checkpoint
    from distill.utils.errors import TrainingInterrupted

    cfg, vocab, ids, samples, targets = _seg_setup(synthetic_root)
    cfg.defrost()
    cfg.SOLVER.CHECKPOINT_PERIOD = 100  # above MAX_ITER: no periodic checkpoint before the signal
    whole = _seg_model(cfg, vocab, ids)
    train_segmenter(cfg, whole, samples, targets, max_iter=7, progress=False, output_dir=tmp_path / "a")

    class Signal(HookBase):  # the signal arrives while iteration 4 (index 3) runs
        def before_step(self):
            if self.trainer.iter == 3:
                os.kill(os.getpid(), signum)

    from distill.integrations.torchvision import engine

    register = engine.Trainer.register_hooks
    previous = signal.getsignal(signum)
    try:
        engine.Trainer.register_hooks = lambda self, hooks: register(self, [*hooks, Signal()])
        with pytest.raises(TrainingInterrupted) as e:
            train_segmenter(
                cfg,
                _seg_model(cfg, vocab, ids),
                samples,
                targets,
                max_iter=7,
                progress=False,
                output_dir=tmp_path / "b",
            )
    finally:
        engine.Trainer.register_hooks = register
    assert signal.getsignal(signum) == previous  # the handlers are the caller's again
    saved = tmp_path / "b" / "model_0000003.pth"
    assert e.value.exit_code == 128 + signum
    assert f"at iteration 4/7: checkpoint saved to {saved}; " in str(e.value) and "--resume" in str(e.value)
    assert last_checkpoint(tmp_path / "b") == saved
    resumed = _seg_model(cfg, vocab, ids)
    train_segmenter(
        cfg, resumed, samples, targets, max_iter=7, progress=False, output_dir=tmp_path / "b", resume=True
    )
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("at,saved", [(1, "model_0000001.pth"), (2, "model_final.pth")])
def test_a_signal_in_the_last_step_stops_with_the_final_checkpoint(tmp_path, at, saved):
    """Stopped during the last step, the run names its final checkpoint (the caller's evaluation is not run)."""
    from distill.integrations.torchvision.engine import AtomicCheckpointer, CheckpointHook, HookBase, Trainer
    from distill.utils.errors import TrainingInterrupted

    class Signal(HookBase):
        def before_step(self):
            if self.trainer.iter == at:
                os.kill(os.getpid(), signal.SIGTERM)

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        _Steps(),
        opt,
        torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0),
        max_iter=3,
        forward=lambda m, x: {"loss": m(x).pow(2).mean()},
    )
    ckpt = AtomicCheckpointer(model, str(tmp_path), optimizer=opt)
    trainer.register_hooks([CheckpointHook(ckpt, period=100), Signal()])
    with pytest.raises(
        TrainingInterrupted, match=f"SIGTERM at iteration {at + 1}/3: checkpoint saved to .*{saved}"
    ):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == saved
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [saved]
