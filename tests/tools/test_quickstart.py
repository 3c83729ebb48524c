"""The quickstart (distill.integrations.quickstart, behind tools/quickstart.py) end to end on a tiny benchmark
and a few iterations, on each installed backend: every stage runs, the table and JSON come out, a rerun skips
cached stages, a folder of the other backend is refused."""

import importlib.util
import json

import pytest

from distill.data.synthetic import SyntheticConfig
from distill.integrations import quickstart

TINY = [
    "MODEL.FPN.OUT_CHANNELS",
    "16",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "8",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.DISTILL.VILD.NUM_DISTILL_PROPOSALS",
    "4",
]
BACKENDS = [
    "torchvision",
    pytest.param(
        "detectron2",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("detectron2") is None,
            reason="detectron2 is not installed (INSTALL.md, 'detectron2')",
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_quickstart_stages_table_cache_and_backend_guard(backend, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        quickstart, "QUICKSTART_DATA", SyntheticConfig(seed=5, num_train=12, num_val=8, image_size=96)
    )
    out = tmp_path / "qs"
    args = [
        "--output-dir",
        str(out),
        "--no-progress",
        "--backend",
        backend,
        "--proposal-iters",
        "3",
        "--vild-iters",
        "2",
        "--semseg-iters",
        "2",
        *TINY,
    ]
    assert quickstart.main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert {"box_AP50_novel", "box_AP50_base", "mask_AP50_novel", "vild_text_box_AP50_novel"} <= set(summary)
    assert "| ViLD | box |" in printed and "| ViLD-text | mask |" in printed
    if backend == "torchvision":
        assert 0 <= summary["semseg_mIoU_novel"] <= 100 and "| CE + pixel distillation |" in printed
        assert (out / "semseg" / "ce_pixel_distillation" / "model_final.pth").is_file()
        assert "iter 2/2" in (out / "semseg" / "ce_pixel_distillation" / "log.txt").read_text()
    stages = json.loads((out / "stages.json").read_text())
    assert sorted(stages) == sorted(quickstart.STAGES) and stages["data"]["backend"] == backend
    assert stages["regions"]["num_images"] == 12 and stages["regions"]["num_regions"] > 0
    assert (out / "detections.png").stat().st_size > 0
    assert (out / "vild" / "model_final.pth").is_file()
    if backend == "torchvision":  # a log file in every OUTPUT_DIR the engine trains into
        assert all("iter" in (out / d / "log.txt").read_text() for d in ("vild_text", "vild"))

    assert quickstart.main(args) == 0  # a rerun: every stage but data is cached
    again = capsys.readouterr().out
    assert again.count(": cached") == len(quickstart.STAGES) - 1
    assert json.loads(again.strip().splitlines()[-1])["box_AP50_novel"] == summary["box_AP50_novel"]

    assert quickstart.main([a if a != "2" else "5" for a in args]) == 2  # cached stages of another schedule
    assert "--vild-iters 2" in capsys.readouterr().err
    assert stages["regions"]["dtype"] == "int8"
    assert quickstart.main([*args, "--region-dtype", "float16"]) == 2  # a cached store of another dtype
    assert "--region-dtype int8" in capsys.readouterr().err

    other = "detectron2" if backend == "torchvision" else "torchvision"
    assert quickstart.main([a if a != backend else other for a in args]) == 2
    assert f"run of the {backend} backend" in capsys.readouterr().err


def test_an_interrupted_quickstart_says_to_run_it_again(tmp_path, monkeypatch, capsys):
    """The quickstart has no --resume: its stages continue when it runs again, and the line says so."""
    import signal

    from distill.utils.errors import TrainingInterrupted

    def interrupted(pipe, skip_semseg):
        raise TrainingInterrupted(
            "SIGINT at iteration 3/8: checkpoint saved to x.pth",
            signal.SIGINT,
            "run the same command with --resume",
        )

    monkeypatch.setattr(quickstart, "run", interrupted)
    assert quickstart.main(["--output-dir", str(tmp_path / "q")]) == 128 + signal.SIGINT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "interrupted: SIGINT at iteration 3/8: checkpoint saved to x.pth; "
        "run the quickstart again to continue (finished stages are kept)"
    )
