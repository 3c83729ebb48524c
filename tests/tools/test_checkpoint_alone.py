"""Every inference tool runs from a checkpoint alone (no training files, from another folder), takes a
vocabulary in the same forms with the same teacher check, and says in one line what a checkpoint of the wrong
kind is; dataset names and a busy web demo port are clear errors too. Tools run in-process (main(argv))."""

import json
import runpy
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from distill.data.synthetic import SYNTHETIC_CATEGORIES
from distill.teacher import ClassEmbeddings
from tests.conftest import REPO, SMALL_MODEL

TOOLS = ("demo", "dump_text_embeddings", "export_model", "export_proposals", "train_net", "web_demo")
tool = {n: SimpleNamespace(**runpy.run_path(str(REPO / "tools" / f"{n}.py"))) for n in TOOLS}
CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")
TEACHER_WEIGHTS = REPO / "distill/model_zoo/weights/synthetic_tiny_teacher_fp16.pt"
NAMES = [c["name"] for c in SYNTHETIC_CATEGORIES]


def _teacher():
    from distill.config import load_config

    t = load_config(CONFIG).MODEL.DISTILL.TEACHER
    return {"arch": t.ARCH, "pretrained": t.PRETRAINED}


def _embeddings(path, names, teacher, dim=None):
    """Random (C, D) vectors recorded as `teacher`'s, D its real dim (the tools encode names with it)."""
    from distill.teacher import create_teacher

    dim = dim or create_teacher(teacher["arch"], teacher["pretrained"]).dim
    g = torch.Generator().manual_seed(len(names))
    emb = F.normalize(torch.randn(len(names), dim, generator=g), dim=1)
    return ClassEmbeddings(emb, names, {"teacher": teacher}).save(path)


@pytest.fixture(scope="module")
def ckpt(synthetic_root, tmp_path_factory):
    """A detector trained 2 steps, copied alone into a folder of its own; its training files are then deleted."""
    bench = synthetic_root.parent / "synthetic"  # where DATASETS.ROOT looks for it
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    train_dir = tmp_path_factory.mktemp("training")
    base = [n for n, c in zip(NAMES, SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    _embeddings(train_dir / "base.npy", base, _teacher())
    torch.manual_seed(0)
    rc = tool["train_net"].main(
        [
            "--config-file",
            CONFIG,
            "--backend",
            "torchvision",
            "--no-progress",
            *SMALL_MODEL,
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "2",
            "MODEL.DISTILL.METHOD",
            "vild_text",
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(train_dir / "base.npy"),
            "DATASETS.ROOT",
            str(synthetic_root.parent),
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(train_dir / "run"),
        ]
    )
    assert rc == 0
    kept = tmp_path_factory.mktemp("kept")
    shutil.copy(train_dir / "run" / "model_final.pth", kept / "model.pth")
    shutil.rmtree(train_dir)
    return kept / "model.pth"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working folder: nothing relative to the repository resolves."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """An untrained segmenter checkpoint (its config travels with it)."""
    from distill.integrations.torchvision.sem_seg import (
        build_sem_seg_model,
        load_semseg_config,
        save_segmenter,
    )

    cfg = load_semseg_config(
        ["MODEL.WEIGHTS", "", "MODEL.DISTILL.SEM_SEG.CONVS_DIM", "16", "MODEL.FPN.OUT_CHANNELS", "16"]
    )
    d = tmp_path_factory.mktemp("seg")
    vocab = ClassEmbeddings.load(_embeddings(d / "v.npy", NAMES[:3], _teacher()))
    torch.manual_seed(0)
    save_segmenter(build_sem_seg_model(cfg, vocab, [1, 2, 3]), d / "seg.pth", cfg)
    return d / "seg.pth"


def one_line(capsys) -> str:
    e = capsys.readouterr().err.strip()
    assert "Traceback" not in e and len(e.splitlines()) == 1, e
    return e


def _img(synthetic_root) -> str:
    return str(synthetic_root / "images/val/000001.png")


def test_every_inference_tool_runs_from_the_checkpoint_alone(
    ckpt, segmenter, synthetic_root, elsewhere, capsys
):
    from distill.ops.roi_align import has_compiled_ops

    demo = ["--weights", str(ckpt), "--input", _img(synthetic_root)]
    assert tool["demo"].main([*demo, "--output", "d"]) == 0
    seg = ["--task", "semseg", "--weights", str(segmenter)]
    assert (
        tool["demo"].main([*seg, "--input", _img(synthetic_root), "--output", "s", "--vocabulary", "star"])
        == 0
    )
    if has_compiled_ops():
        assert tool["export_model"].main([*seg, "--vocabulary", "star,moon", "--output", "es"]) == 0
    # a --config-file whose training class embeddings are not here: the export does not read them
    nowhere = ["MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", "output/quickstart/text/synthetic_base.npy"]
    export = ["--weights", str(ckpt), "--vocabulary", "star,moon"]
    if has_compiled_ops():
        assert tool["export_model"].main([*export, "--output", "e"]) == 0
        meta = json.loads(Path("e/model.json").read_text())
        assert (
            meta["class_names"] == ["star", "moon"]
            and meta["teacher"]["teacher"]["arch"] == _teacher()["arch"]
        )
        args = [*export, "--config-file", CONFIG, "--output", "e2", *SMALL_MODEL, *nowhere]
        assert tool["export_model"].main(args) == 0
    out = tool["export_proposals"].main(
        ["--weights", str(ckpt), "--dataset", "distill_synthetic_val", "--output", "p.npz", "--top-k", "5"]
    )
    assert out == 0 and Path("p.npz").is_file()
    test_vocab = _embeddings(elsewhere / "all.npy", NAMES, _teacher())
    eval_only = [
        "--config-file",
        CONFIG,
        "--eval-only",
        *SMALL_MODEL,
        *nowhere,
        "MODEL.WEIGHTS",
        str(ckpt),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        str(test_vocab),
        "DATASETS.ROOT",
        str(synthetic_root.parent),
        "DATASETS.TEST",
        "('distill_synthetic_val',)",
        "OUTPUT_DIR",
        "ev",
    ]
    assert tool["train_net"].main(eval_only) == 0
    assert "AP50" in capsys.readouterr().out
    # no --config-file: the checkpoint's own (its model settings, the overrides on top), OUTPUT_DIR required
    alone = [
        "--eval-only",
        "MODEL.WEIGHTS",
        str(ckpt),
        "DATASETS.ROOT",
        str(synthetic_root.parent),
    ]
    alone += ["DATASETS.TEST", "('distill_synthetic_val',)"]
    assert tool["train_net"].main([*alone, "OUTPUT_DIR", "ev2"]) == 0
    assert "AP50" in capsys.readouterr().out and Path("ev2/config.yaml").is_file()
    assert tool["train_net"].main(alone) == 2
    assert "needs OUTPUT_DIR" in one_line(capsys)


def test_web_demo_from_the_checkpoint_alone(ckpt, segmenter, elsewhere, capsys, monkeypatch):
    pytest.importorskip("gradio", reason="gradio not installed (pip install -e '.[demo]')")
    import distill.integrations.web_demo as web

    served = {}

    class App:
        def block_thread(self):
            served["blocked"] = True

    def build_app(models):
        served["boxes"] = web.detect(models, torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(), "star", 0.0)
        return App()

    monkeypatch.setattr(web, "build_app", build_app)
    monkeypatch.setattr(web, "launch", lambda app, host, port, block=True: None)
    argv = ["--weights", str(ckpt), "--semseg-weights", str(segmenter), "--port", str(_free_port())]
    assert tool["web_demo"].main(argv) == 0
    assert served["blocked"] and "serving on" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_web_demo_on_a_busy_port_is_one_line(ckpt, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert tool["web_demo"].main(["--weights", str(ckpt), "--port", str(port)]) == 2
    out = capsys.readouterr()
    assert "serving on" not in out.out
    assert f"127.0.0.1:{port}" in out.err and "--port" in out.err and len(out.err.strip().splitlines()) == 1


def test_vocabulary_in_every_form_and_the_teacher_checked(ckpt, synthetic_root, tmp_path, capsys):
    demo = ["--weights", str(ckpt), "--input", _img(synthetic_root)]
    names = tmp_path / "classes.txt"
    names.write_text("star\nmoon, cloud\n")
    own = _embeddings(tmp_path / "own.npy", ["star", "heart"], _teacher())
    for spec, expected in ((str(names), ["star", "moon", "cloud"]), (str(own), ["star", "heart"])):
        for flags in (["--custom-vocabulary", spec], ["--vocabulary", spec]):
            out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
            assert tool["demo"].main([*demo, *flags, "--output", str(out)]) == 0
            cats = json.loads((out / "predictions.json").read_text())["categories"]
            assert [c["name"] for c in cats] == expected
    capsys.readouterr()  # the runs above warn that "moon" and "cloud" are outside the tiny teacher's world
    # class embeddings of another teacher: refused by the demo and the export, as training refuses them
    other = _embeddings(
        tmp_path / "other.npy", ["star", "moon"], {"arch": "RN50", "pretrained": "openai"}, 128
    )
    assert tool["demo"].main([*demo, "--custom-vocabulary", str(other), "--output", str(tmp_path / "x")]) == 2
    assert "--custom-vocabulary: made by teacher RN50/openai" in one_line(capsys)
    export = ["--weights", str(ckpt), "--output", str(tmp_path / "e")]
    assert tool["export_model"].main([*export, "--vocabulary", str(other)]) == 2
    assert "--vocabulary: made by teacher RN50/openai" in one_line(capsys)
    assert not (tmp_path / "e").exists()
    # a tool that encodes names says so of class embeddings
    argv = [
        "--teacher",
        "synthetic-tiny-teacher",
        "--vocabulary",
        str(own),
        "--output",
        str(tmp_path / "n.npy"),
    ]
    assert tool["dump_text_embeddings"].main(argv) == 2
    assert "holds class embeddings, not class names" in one_line(capsys)
    # an empty vocabulary names the flag of the tool that was given it
    assert tool["export_model"].main([*export, "--vocabulary", ""]) == 2
    e = one_line(capsys)
    assert "--vocabulary: empty vocabulary" in e and "--custom-vocabulary" not in e


def test_a_checkpoint_of_another_kind_is_one_line(ckpt, segmenter, synthetic_root, tmp_path, capsys):
    rand = tmp_path / "random.pth"
    torch.save({"weights": torch.zeros(3)}, rand)
    det, seg = "a detector checkpoint", "a segmenter checkpoint"
    cases = [
        (segmenter, "detect", seg, det),
        (ckpt, "semseg", det, seg),
        (rand, "detect", "not a model checkpoint", det),
        (TEACHER_WEIGHTS, "detect", "a teacher (open_clip) checkpoint", det),
        (TEACHER_WEIGHTS, "semseg", "a teacher (open_clip) checkpoint", seg),
    ]
    for weights, task, what, expected in cases:
        common = ["--weights", str(weights), "--task", task]
        argv = [*common, "--input", _img(synthetic_root), "--output", str(tmp_path / "d")]
        assert tool["demo"].main(argv) == 2
        e = one_line(capsys)
        assert what in e and f"but {expected}" in e, e
        assert (
            tool["export_model"].main([*common, "--vocabulary", "star", "--output", str(tmp_path / "e")]) == 2
        )
        e = one_line(capsys)
        assert what in e and f"but {expected}" in e, e
    argv = ["--weights", str(segmenter), "--semseg-weights", "", "--port", str(_free_port())]
    assert tool["web_demo"].main(argv) == 2
    assert "--weights is a segmenter checkpoint" in one_line(capsys)
    assert tool["web_demo"].main(["--weights", str(ckpt), "--semseg-weights", str(ckpt)]) == 2
    assert "--semseg-weights is a detector checkpoint" in one_line(capsys)
    argv = [
        "--config-file",
        CONFIG,
        "--eval-only",
        "MODEL.WEIGHTS",
        str(segmenter),
        "OUTPUT_DIR",
        str(tmp_path),
    ]
    assert tool["train_net"].main(argv) == 2
    assert "MODEL.WEIGHTS is a segmenter checkpoint" in one_line(capsys)


def test_dataset_names_missing_files_or_malformed(ckpt, synthetic_root, tmp_path, capsys):
    root = str(synthetic_root)
    cases = [  # a mistyped path is a file not found, with the path; a malformed name shows the form
        (
            f"coco:{root}/annotations/instances_val.jsn:{root}/images/val",
            f"{root}/annotations/instances_val.jsn: ",
        ),
        (
            f"coco:{root}/annotations/instances_val.json:{root}/images/vall",
            f"{root}/images/vall: image folder",
        ),
        (f"lvis:{root}/nope.json:{root}/images/val", f"{root}/nope.json: annotation file"),
        (f"coco:{root}/annotations/instances_val.json", "expected coco:ANNOTATIONS.json:IMAGE_FOLDER"),
        ("lvis:a.json:", "expected lvis:ANNOTATIONS.json:IMAGE_FOLDER"),
    ]
    for name, message in cases:
        argv = ["--config-file", CONFIG, "--weights", str(ckpt), "--dataset", name, "--top-k", "5"]
        assert tool["export_proposals"].main([*argv, "--output", str(tmp_path / "p.npz"), *SMALL_MODEL]) == 2
        e = one_line(capsys)
        assert message in e and ("expected" in e or "not found" in e), e


def test_messages_name_only_flags_the_tool_has(ckpt, synthetic_root, tmp_path, capsys):
    # the demo has no --teacher: a teacher checkpoint of another arch is told by its config key
    argv = ["--config-file", CONFIG, "--weights", str(ckpt), "--input", _img(synthetic_root)]
    argv += ["--output", str(tmp_path / "d"), "--custom-vocabulary", "star", *SMALL_MODEL]
    assert tool["demo"].main([*argv, "MODEL.DISTILL.TEACHER.ARCH", "RN50"]) == 2
    e = one_line(capsys)
    assert "does not fit architecture RN50" in e and "--teacher" not in e
