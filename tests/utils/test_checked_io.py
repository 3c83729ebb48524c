import errno
import os
import stat

import pytest
import torch

from distill.config import check_schedule, load_config
from distill.utils import DistillInputError, atomic_write_bytes, atomic_write_json
from distill.utils.checkpoint import last_checkpoint, load_torch_file, read_checkpoint
from tests.conftest import REPO


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_honour_the_umask(tmp_path, umask022):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600


def test_synthetic_dataset_folder_honours_the_umask(tmp_path, umask022):
    from distill.data.synthetic import SyntheticConfig, generate

    out = generate(
        tmp_path / "bench", SyntheticConfig(seed=1, num_train=2, num_val=1, image_size=64), progress=False
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "meta.json").stat().st_mode) == 0o644


def test_write_path_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DistillInputError, match="file is in the way|is a file"):
        atomic_write_json(tmp_path / "file" / "out.json", {})
    (tmp_path / "dir").mkdir()
    with pytest.raises(DistillInputError, match="is a folder"):
        atomic_write_json(tmp_path / "dir", {})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    for what, code in (("disk full", errno.ENOSPC), ("read-only", errno.EROFS)):

        def fail(*a, _code=code, **k):
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(os, "replace", fail)
        with pytest.raises(DistillInputError, match=what):
            atomic_write_json(tmp_path / "dir" / "x.json", {"a": 1})
        assert list((tmp_path / "dir").iterdir()) == []  # no .partial left behind
    monkeypatch.undo()


def test_unreadable_checkpoints_are_one_line(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(DistillInputError, match="empty file"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save({"model": {"w": torch.zeros(3)}, "iteration": 4}, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillInputError, match="truncated, corrupt"):
        read_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "img.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(DistillInputError, match="truncated, corrupt"):
        load_torch_file(tmp_path / "img.pth")
    torch.save({"optimizer": {"lr": 1}}, tmp_path / "other.pth")
    with pytest.raises(DistillInputError, match="not a model checkpoint"):
        read_checkpoint(tmp_path / "other.pth")
    assert read_checkpoint(tmp_path / "good.pth")["iteration"] == 4


def test_last_checkpoint_naming_a_missing_or_empty_file(tmp_path):
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(DistillInputError, match="not there"):
        last_checkpoint(tmp_path)
    (tmp_path / "model_0000009.pth").write_bytes(b"")
    with pytest.raises(DistillInputError, match="empty file"):
        last_checkpoint(tmp_path)


def test_broken_yaml_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("MODEL:\n  WEIGHTS: [unclosed\n")
    with pytest.raises(DistillInputError, match="not valid yaml.*line"):
        load_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "base.yaml").write_text('_BASE_: "nope.yaml"\n')
    with pytest.raises(DistillInputError, match="cannot read the config"):
        load_config(str(tmp_path / "base.yaml"))


def test_max_iter_below_warmup_warns():
    cfg = load_config(
        str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml"),
        ["SOLVER.MAX_ITER", "60", "SOLVER.WARMUP_ITERS", "100"],
    )
    assert any("below SOLVER.WARMUP_ITERS 100" in w for w in check_schedule(cfg))
    cfg = load_config(
        str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml"),
        ["SOLVER.MAX_ITER", "600", "SOLVER.WARMUP_ITERS", "100"],
    )
    assert check_schedule(cfg) == []


def test_output_names_never_hit_an_input_and_never_collide(tmp_path):
    from distill.utils.cli import output_names

    a, b, c = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.jpg"
    outs = output_names([a, b, c], tmp_path / "out")
    assert len(set(outs)) == 3 and outs[2] == tmp_path / "out" / "b.png"
    with pytest.raises(DistillInputError, match="would overwrite the input image"):
        output_names([a, c], tmp_path)  # drawing a.png into the folder that holds it


def test_quick_configs_do_not_write_into_the_quickstarts_folders():
    for name in ("vild_r18_fpn_quick.yaml", "semseg_r18_fpn_quick.yaml"):
        cfg = load_config(str(REPO / "configs/synthetic" / name))
        assert not cfg.OUTPUT_DIR.startswith("output/quickstart"), name


def test_line_progress_prints_periodic_lines_and_an_end(monkeypatch, capsys):
    from distill.utils import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setenv("DISTILL_PROGRESS_EVERY", "0")
    bar = progress.job_progress(range(3), True, desc="regions", unit="img")
    assert isinstance(bar, progress.LineProgress)
    for _ in bar:
        bar.set_postfix(crops_per_s="12")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and "regions: 3/3 img (100%)" in lines[-1] and "done in" in lines[-1]
    assert "eta" in lines[0] and "crops_per_s 12" in lines[1]
    monkeypatch.setenv("DISTILL_PROGRESS_EVERY", "3600")
    with progress.job_progress(None, False, total=5, desc="quiet") as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""  # a short job prints nothing


def test_line_progress_eta_follows_the_recent_rate(monkeypatch, capsys):
    """10 slow items (10 s each: loading, warm-up) then fast ones (1 s): the ETA is the fast speed's, not the
    whole-run average's (which stays inflated long after the slow start)."""
    import re

    from distill.utils import progress

    clock = [0.0]
    monkeypatch.setenv("DISTILL_PROGRESS_EVERY", "10")
    bar = progress.LineProgress(total=200, desc="regions", clock=lambda: clock[0])
    for i in range(100):
        clock[0] += 10.0 if i < 10 else 1.0
        bar.update(1)
    etas = re.findall(r"eta (\d+):(\d\d):(\d\d)", capsys.readouterr().err)
    h, m, s = map(int, etas[-1])
    assert 95 <= 3600 * h + 60 * m + s <= 115, etas[-1]  # 100 left at ~1 s each (whole-run average: 190 s)
