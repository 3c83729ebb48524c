"""The teacher's training loop on SIGINT / SIGTERM: the step in progress is saved and a rerun ends with the
weights of an uninterrupted run."""

import os
import signal

import pytest
import torch

from distill.teacher import training
from distill.teacher.train_config import TeacherTrainConfig
from distill.utils.errors import TrainingInterrupted


def test_a_signal_saves_the_step_and_a_rerun_ends_the_same(tmp_path, monkeypatch):
    cfg = TeacherTrainConfig(
        arch="distill-tiny-rn", corpus_images=4, steps=4, batch_size=4, checkpoint_every=100
    )
    whole = torch.load(training.train_teacher(tmp_path / "a", cfg, progress=False), weights_only=True)
    loss, calls = training.multi_positive_clip_loss, []

    def signalled(*a, **k):  # SIGTERM during the second step
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(*a, **k)

    monkeypatch.setattr(training, "multi_positive_clip_loss", signalled)
    out = tmp_path / "b"
    with pytest.raises(
        TrainingInterrupted, match=f"SIGTERM at step 2/4: checkpoint saved to {out / 'last.pt'}"
    ) as e:
        training.train_teacher(out, cfg, progress=False)
    assert e.value.exit_code == 128 + signal.SIGTERM and not (out / "teacher_fp16.pt").exists()
    monkeypatch.setattr(training, "multi_positive_clip_loss", loss)
    resumed = torch.load(training.train_teacher(out, cfg, progress=False), weights_only=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
