"""Numbers, devices and files checked where they enter, in every tool: out of range, a device this machine
lacks, a prediction that is not a number, an image a pixel thin. Each is one line on stderr and exit code 2
(argparse errors included), or runs correctly; never a traceback, never a wrong result with exit code 0."""

import runpy
from types import SimpleNamespace

import pytest
import torch

from distill.teacher.prompt_config import PromptTrainConfig
from distill.teacher.train_config import TeacherTrainConfig
from distill.utils import DistillInputError
from tests.conftest import REPO

TOOLS = (
    "demo",
    "download_model",
    "dump_region_embeddings",
    "dump_text_embeddings",
    "export_model",
    "export_proposals",
    "train_net",
    "train_prompts",
    "train_teacher",
    "web_demo",
)
tool = {n: SimpleNamespace(**runpy.run_path(str(REPO / "tools" / f"{n}.py"))) for n in TOOLS}
CONFIG = str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")


def one_line(capsys) -> str:
    e = capsys.readouterr().err.strip()
    assert "Traceback" not in e
    lines = e.splitlines()
    assert len(lines) == 1, e
    return lines[0]


def run(name, argv, capsys) -> str:
    """A tool's main in-process: exit code 2 and the one line it printed (argparse's exit included)."""
    try:
        code = tool[name].main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    return one_line(capsys)


REQUIRED = {
    "demo": ["--weights", "w.pth", "--input", "in", "--output", "out"],
    "dump_region_embeddings": [
        *("--teacher", "t", "--dataset-json", "d.json", "--image-root", "i", "--proposals", "p.json"),
        *("--output", "o"),
    ],
    "export_proposals": ["--config-file", CONFIG, "--weights", "w", "--dataset", "d", "--output", "o.npz"],
    "train_net": ["--config-file", CONFIG],
}


@pytest.mark.parametrize(
    "name, flags, needle",
    [
        ("demo", ["--score-thresh", "nan"], "--score-thresh: expected a number in [0, 1], got 'nan'"),
        ("demo", ["--score-thresh", "1.5"], "expected a number in [0, 1]"),
        ("download_model", ["--timeout", "-1", "x"], "--timeout: expected a number > 0"),
        ("dump_region_embeddings", ["--scales", "1", "0"], "--scales: expected a number > 0, got '0'"),
        ("dump_region_embeddings", ["--workers", "-1"], "--workers: expected an integer >= 0"),
        (
            "dump_region_embeddings",
            ["--rank", "2", "--world-size", "2"],
            "--rank 2 must be below --world-size 2",
        ),
        ("export_proposals", ["--top-k", "0"], "--top-k: expected an integer > 0"),
        ("train_net", ["--num-gpus", "0"], "--num-gpus: expected an integer > 0"),
        ("train_net", ["--machine-rank", "1"], "--machine-rank 1 must be below --num-machines 1"),
        ("train_teacher", ["--threads", "0"], "--threads: expected an integer > 0"),
        ("web_demo", ["--port", "99999"], "--port: expected a port number"),
        ("demo", ["--task", "both"], "argument --task: invalid choice"),
    ],
)
def test_flags_out_of_range_are_one_line(name, flags, needle, capsys):
    line = run(name, [*REQUIRED.get(name, []), *flags], capsys)
    assert line.startswith("error: ") and needle in line


def test_quickstart_iterations_out_of_range(capsys):
    from distill.integrations.quickstart import main

    with pytest.raises(SystemExit) as e:
        main(["--vild-iters", "0"])
    assert e.value.code == 2 and "--vild-iters: expected an integer > 0" in one_line(capsys)


@pytest.mark.parametrize(
    "name, argv, needle",
    [
        ("train_teacher", ["--steps", "0"], "steps must be a number > 0, got 0"),
        ("train_teacher", ["--lr", "nan"], "lr must be a number > 0, got nan"),
        (
            "train_prompts",
            ["--method", "coop", "--teacher", "t", "--output", "p.safetensors", "--alpha", "2"],
            "alpha must be a number in [0, 1], got 2.0",
        ),
        (
            "train_prompts",
            ["--method", "detpro", "--teacher", "t", "--output", "p.safetensors", "--iou-bins", "0.9,0.5"],
            "iou_bins must be >= 2 increasing edges",
        ),
    ],
)
def test_recipe_settings_out_of_range(name, argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in run(name, argv, capsys)
    assert not list(tmp_path.iterdir())  # checked before anything is written


def test_prompt_settings_in_python_too():
    PromptTrainConfig(steps=0)  # 0 steps: the context as initialised (a baseline)
    with pytest.raises(DistillInputError, match="batch_size must be a number > 0"):
        PromptTrainConfig(batch_size=0)
    with pytest.raises(DistillInputError, match="warmup must be a number >= 0"):
        TeacherTrainConfig(warmup=-1)
    TeacherTrainConfig(warmup=0)  # no warm-up (used to divide by zero)


@pytest.mark.parametrize(
    "override, needle",
    [
        (["SOLVER.MAX_ITER", "-1"], "SOLVER.MAX_ITER = -1: must be a number > 0"),
        (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR = -0.1: must be a number > 0"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH = 0: must be a number > 0"),
        (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS = -1: must be a number >= 0"),
        (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "7.0"], "SCORE_THRESH_TEST = 7.0: must be a number in [0, 1]"),
        (["MODEL.DISTILL.TEMPERATURE", "0.0"], "MODEL.DISTILL.TEMPERATURE = 0.0: must be a number > 0"),
        (["INPUT.MIN_SIZE_TRAIN", "(0,)"], "INPUT.MIN_SIZE_TRAIN = (0,): sizes must be integers > 0"),
    ],
)
def test_config_values_out_of_range(override, needle, capsys, tmp_path):
    argv = [*REQUIRED["train_net"], "--backend", "torchvision", "OUTPUT_DIR", str(tmp_path / "o"), *override]
    assert needle in run("train_net", argv, capsys)
    assert not (tmp_path / "o").exists()


def test_nan_in_a_yaml(capsys, tmp_path):
    yaml = tmp_path / "nan.yaml"
    yaml.write_text(f"_BASE_: {CONFIG}\nSOLVER:\n  BASE_LR: .nan\n")
    argv = ["--config-file", str(yaml), "--backend", "torchvision", "OUTPUT_DIR", str(tmp_path / "o")]
    assert "SOLVER.BASE_LR = nan: must be a number > 0" in run("train_net", argv, capsys)


@NO_CUDA
@pytest.mark.parametrize("device, needle", [("cuda", "no usable CUDA device"), ("gpu0", "is not a device")])
def test_a_device_this_machine_lacks(device, needle, capsys, tmp_path):
    out = str(tmp_path / "t.npy")
    argv = [
        "--teacher",
        "synthetic-tiny-teacher",
        "--vocabulary",
        "cat,dog",
        "--device",
        device,
        "--output",
        out,
    ]
    line = run("dump_text_embeddings", argv, capsys)
    assert line.startswith("error: --device ") and needle in line and "checkpoint" not in line
    argv = [*REQUIRED["train_net"], "--backend", "torchvision", "OUTPUT_DIR", str(tmp_path / "o")]
    line = run("train_net", [*argv, "MODEL.DEVICE", device], capsys)
    assert line.startswith("error: MODEL.DEVICE ") and needle in line


def test_check_device():
    from distill.utils.device import check_device

    assert check_device("cpu") == "cpu"
    needle = "CUDA device\\(s\\)" if torch.cuda.is_available() else "no usable CUDA device"
    with pytest.raises(DistillInputError, match=needle):
        check_device("cuda:99", "MODEL.DEVICE")
    with pytest.raises(DistillInputError, match="'gpu0' is not a device"):
        check_device("gpu0")


def test_a_binary_file_is_no_vocabulary(tmp_path, capsys):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    argv = [
        "--teacher",
        "synthetic-tiny-teacher",
        "--vocabulary",
        str(png),
        "--output",
        str(tmp_path / "v.npy"),
    ]
    assert "not a text file of class names" in run("dump_text_embeddings", argv, capsys)


def test_a_one_pixel_sliver_resizes_to_one_pixel():
    from distill.integrations.onnx_model import resized_hw as onnx_hw
    from distill.integrations.torchvision.mapper import resized_hw

    assert resized_hw(1, 4000, 96, 160) == (1, 160)
    assert resized_hw(4000, 1, 96, 160) == (160, 1)
    assert resized_hw(30, 40, 0, 160) == (30, 40)  # MIN_SIZE_TEST 0: no resize, as detectron2
    rule = {"kind": "shortest_edge", "short": 96, "max": 160}
    assert onnx_hw(1, 4000, rule, (160, 160)) == (1, 160)


def test_a_value_of_the_wrong_type_names_key_and_type(capsys, tmp_path):
    argv = [*REQUIRED["train_net"], "--backend", "torchvision", "OUTPUT_DIR", str(tmp_path / "o")]
    line = run("train_net", [*argv, "SOLVER.MAX_ITER", "abc"], capsys)
    assert "SOLVER.MAX_ITER takes an int like 800, got abc (a str)" in line
    # an integer for a float key is what one types (GETTING_STARTED.md's own-dataset command does): it is that float
    from distill.config import load_config

    cfg = load_config(CONFIG, ["MODEL.DISTILL.VILD.IMAGE_LOSS_WEIGHT", "0", "SOLVER.BASE_LR", "1"])
    assert cfg.MODEL.DISTILL.VILD.IMAGE_LOSS_WEIGHT == 0.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert "MODEL.DISTILL.TEMPERATURE = 0.0: must be a number > 0" in run(
        "train_net", [*argv, "MODEL.DISTILL.TEMPERATURE", "0"], capsys
    )


def test_a_teacher_checkpoint_of_another_architecture(capsys, tmp_path):
    from distill.model_zoo import resolve_weights

    weights = resolve_weights("synthetic-tiny-teacher")  # a distill-tiny-rn checkpoint
    argv = ["--teacher", "RN50", "--pretrained", weights, "--vocabulary", "cat,dog"]
    line = run("dump_text_embeddings", [*argv, "--output", str(tmp_path / "v.npy")], capsys)
    assert "teacher checkpoint does not fit architecture RN50" in line
    assert not list(tmp_path.iterdir())


def test_teacher_training_resumes_only_with_its_own_settings(tmp_path, capsys):
    from distill.teacher.training import train_teacher

    small = dict(arch="distill-tiny-rn", corpus_images=4, steps=1, batch_size=4, checkpoint_every=1)
    train_teacher(tmp_path, TeacherTrainConfig(**small), progress=False)
    assert (tmp_path / "last.pt").is_file()
    with pytest.raises(DistillInputError, match="other settings \\(steps 1 vs 2, lr 0.001 vs 0.002\\)"):
        train_teacher(tmp_path, TeacherTrainConfig(**{**small, "steps": 2, "lr": 2e-3}), progress=False)
    train_teacher(tmp_path, TeacherTrainConfig(**small), progress=False)  # the same settings resume


def test_text_embeddings_are_not_replaced_unasked(tmp_path, capsys):
    out, base = tmp_path / "all.npy", tmp_path / "base.npy"
    out.write_bytes(b"mine")
    argv = ["--teacher", "synthetic-tiny-teacher", "--vocabulary", "cat,dog", "--output", str(out)]
    assert "--output exists" in run("dump_text_embeddings", argv, capsys)
    assert out.read_bytes() == b"mine"
    (tmp_path / "base.npy.json").write_text("{}")  # a sidecar alone is also someone's file
    vocab = str(REPO / "distill/data/splits/ov_coco.json")
    argv2 = [
        "--teacher",
        "synthetic-tiny-teacher",
        "--vocabulary",
        vocab,
        "--output",
        str(tmp_path / "n.npy"),
    ]
    assert "--base-output exists" in run("dump_text_embeddings", [*argv2, "--base-output", str(base)], capsys)
    assert tool["dump_text_embeddings"].main([*argv, "--overwrite"]) == 0
    assert out.read_bytes() != b"mine"


def test_proposals_file_of_an_unknown_format(capsys, tmp_path):
    argv = [*REQUIRED["export_proposals"][:-1], str(tmp_path / "p.txt")]
    assert "--output must end in .npz or .json" in run("export_proposals", argv, capsys)
