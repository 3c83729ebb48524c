"""Errors that need no model (a config key typo, a missing config, weights or class embeddings file) are one
line, exit code 2, reported before torch is imported (that import takes seconds), with a "did you mean"."""

import json
import subprocess
import sys

import pytest

from distill.config import load_config
from distill.utils import DistillInputError
from tests.conftest import REPO

CFG = str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml")
SEG = str(REPO / "configs/synthetic/semseg_r18_fpn_quick.yaml")


def probe(tool: str, *argv: str) -> tuple[dict, str]:
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/tools/early_probe.py"), str(REPO / "tools" / tool), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr.strip()


@pytest.fixture
def files(tmp_path):
    """An image, a weights file that exists (never read: the errors come first) and a yaml with a typo."""
    img = tmp_path / "in.png"
    img.write_bytes(b"not read before the error")
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"never loaded")
    bad_yaml = tmp_path / "typo.yaml"
    bad_yaml.write_text(f"_BASE_: {CFG}\nSOLVER:\n  MAX_ITERS: 3\n")
    return img, str(weights), str(bad_yaml), str(tmp_path / "missing.pth")


def cases(img, weights, bad_yaml, missing):
    io = ["--input", str(img), "--output", str(img.parent / "out")]
    typo = ["SOLVER.MAX_ITERS", "3"]
    did_you_mean = "unknown config key SOLVER.MAX_ITERS on the command line; did you mean SOLVER.MAX_ITER"
    from_yaml = "unknown config key SOLVER.MAX_ITERS; did you mean SOLVER.MAX_ITER"
    not_found = "weights not found"
    return [
        ("train_net.py", ["--config-file", CFG, "--backend", "torchvision", *typo], did_you_mean),
        ("train_net.py", ["--config-file", bad_yaml, "--backend", "torchvision"], from_yaml),
        ("train_net.py", ["--config-file", CFG, "--eval-only", "MODEL.WEIGHTS", missing], not_found),
        (
            "demo.py",
            ["--config-file", CFG, "--weights", weights, "--backend", "torchvision", *io, *typo],
            did_you_mean,
        ),
        ("demo.py", ["--config-file", CFG, "--weights", missing, *io], not_found),
        ("demo.py", ["--weights", missing, *io], not_found),
        ("demo.py", ["--task", "semseg", "--config-file", bad_yaml, "--weights", weights, *io], from_yaml),
        (
            "demo.py",
            [
                "--config-file",
                CFG,
                "--weights",
                weights,
                "--backend",
                "torchvision",
                *io,
                "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
                missing + ".npy",
            ],
            "class embeddings file not found",
        ),
        (
            "export_model.py",
            [
                "--config-file",
                CFG,
                "--weights",
                weights,
                "--vocabulary",
                "synthetic",
                "--output",
                str(img.parent / "exp"),
                *typo,
            ],
            did_you_mean,
        ),
        (
            "export_model.py",
            [
                "--config-file",
                CFG,
                "--weights",
                missing,
                "--vocabulary",
                "synthetic",
                "--output",
                str(img.parent / "exp"),
            ],
            not_found,
        ),
        (
            "export_proposals.py",
            [
                "--config-file",
                CFG,
                "--weights",
                weights,
                "--dataset",
                "distill_synthetic_val",
                "--output",
                str(img.parent / "p.npz"),
                *typo,
            ],
            did_you_mean,
        ),
        (
            "export_proposals.py",
            [
                "--config-file",
                CFG,
                "--weights",
                missing,
                "--dataset",
                "distill_synthetic_val",
                "--output",
                str(img.parent / "p.npz"),
            ],
            not_found,
        ),
        ("web_demo.py", ["--config-file", CFG, "--weights", weights, *typo], did_you_mean),
        (
            "web_demo.py",
            ["--config-file", CFG, "--weights", weights, "--semseg-config", SEG, "--semseg-weights", missing],
            "segmenter weights not found",
        ),
        (
            "dump_region_embeddings.py",
            [
                *("--teacher", "distill-tiny-vit", "--dataset-json", missing + ".json", "--image-root"),
                *(str(img.parent), "--proposals", weights, "--output", str(img.parent / "store")),
            ],
            "annotation file (--dataset-json) not found",
        ),
        ("quickstart.py", ["--output-dir", str(img.parent / "qs"), *typo], did_you_mean),
        (
            "dump_text_embeddings.py",
            [
                "--teacher",
                "synthetic-tiny-teacher",
                "--vocabulary",
                missing + ".txt",
                "--output",
                missing + ".npy",
            ],
            "vocabulary file not found",
        ),
        (
            "dump_text_embeddings.py",
            [
                "--teacher",
                "distill-tiny-vit",
                "--pretrained",
                missing,
                "--vocabulary",
                "a,b",
                "--output",
                missing + ".npy",
            ],
            "teacher checkpoint not found",
        ),
        (
            "train_prompts.py",
            [
                *(
                    "--method",
                    "coop",
                    "--teacher",
                    "synthetic-tiny-teacher",
                    "--train-json",
                    missing + ".json",
                ),
                *("--image-root", str(img.parent), "--output", str(img.parent / "p.safetensors")),
            ],
            "annotation file (--train-json) not found",
        ),
    ]


@pytest.mark.parametrize("k", range(19))
def test_error_needing_no_model_comes_before_torch(files, k):
    tool, argv, message = cases(*files)[k]
    info, err = probe(tool, *argv)
    assert info["code"] == 2, err
    assert message in err and len(err.splitlines()) == 1, err
    assert info["heavy"] == [], f"{tool} imported {info['heavy']} before reporting: {err}"


def test_unknown_key_suggestions():
    with pytest.raises(
        DistillInputError, match=r"key MAX_ITER on the command line; did you mean SOLVER\.MAX_ITER\?"
    ):
        load_config(CFG, ["MAX_ITER", "3"])  # the right leaf under no node
    with pytest.raises(DistillInputError, match=r"did you mean MODEL\.DISTILL\.TEMPERATURE"):
        load_config(CFG, ["DISTILL.TEMPERATURE", "1"])
    with pytest.raises(DistillInputError, match=r"unknown config key FOO\.BAR on the command line$"):
        load_config(CFG, ["FOO.BAR", "1"])  # nothing close: no suggestion


def test_check_config_early_leaves_detectron2_keys_to_detectron2(monkeypatch):
    """detectron2's config has keys the torchvision defaults lack: where it may run, its own load judges them."""
    from distill.config import UnknownConfigKey
    from distill.integrations import backend

    d2_only = ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, False, False]"]
    with pytest.raises(UnknownConfigKey):
        backend.check_config_early(CFG, d2_only, "torchvision")
    assert backend.check_config_early(CFG, d2_only, "detectron2") is None
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)  # detectron2 not installed
    with pytest.raises(UnknownConfigKey):
        backend.check_config_early(CFG, d2_only, "auto")
    with pytest.raises(DistillInputError, match="must be a number > 0"):  # values are judged everywhere
        backend.check_config_early(CFG, ["SOLVER.MAX_ITER", "0"], "detectron2")


def test_a_typo_is_reported_early_where_detectron2_may_run(monkeypatch):
    """detectron2's own keys are read from its defaults' text: a key it lacks too is a typo reported at once, with
    the suggestion, instead of after detectron2's imports."""
    from distill.config import UnknownConfigKey
    from distill.integrations import backend

    known = frozenset({"SOLVER.", "SOLVER.MAX_ITER", "MODEL.RESNETS.", "MODEL.RESNETS.DEFORM_ON_PER_STAGE"})
    monkeypatch.setattr(backend, "detectron2_config_keys", lambda: known)
    with pytest.raises(UnknownConfigKey, match="did you mean SOLVER.MAX_ITER"):
        backend.check_config_early(CFG, ["SOLVER.MAX_ITERS", "3"], "detectron2")
    d2_only = ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, False, False]"]
    assert backend.check_config_early(CFG, d2_only, "detectron2") is None
    monkeypatch.setattr(backend, "detectron2_config_keys", lambda: frozenset())  # unparsed: detectron2 judges
    assert backend.check_config_early(CFG, ["SOLVER.MAX_ITERS", "3"], "detectron2") is None


def test_detectron2_config_keys_are_read_from_its_defaults():
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    from distill.integrations.backend import detectron2_config_keys

    keys = detectron2_config_keys()
    assert {"SOLVER.MAX_ITER", "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "MODEL.ROI_HEADS."} <= keys
    assert "SOLVER.MAX_ITERS" not in keys


@pytest.mark.parametrize("where", ["command line", "yaml"])
def test_a_group_of_keys_given_a_value_is_one_line(tmp_path, where):
    from distill.config import load_config

    if where == "yaml":
        bad = tmp_path / "bad.yaml"
        bad.write_text("MODEL:\n  ROI_BOX_HEAD: 3\n")
        args = (str(bad), [])
    else:
        args = (CFG, ["MODEL.ROI_BOX_HEAD", "X"])
    with pytest.raises(DistillInputError) as e:
        load_config(*args)
    assert "\n" not in str(e.value) and "MODEL.ROI_BOX_HEAD is a group of keys" in str(e.value)
