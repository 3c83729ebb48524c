"""What a newcomer broke (issue 20), at the command line: each case is one line on stderr and exit 2 (or a loud
warning), nothing of the user's is overwritten, nothing half written. Tools run in-process (main(argv))."""

import json
import os
import runpy
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from distill.data.synthetic import SYNTHETIC_CATEGORIES
from distill.teacher import ClassEmbeddings
from distill.utils.outdir import lock_output_dir
from tests.conftest import REPO, SMALL_MODEL


def _tool(name: str) -> SimpleNamespace:
    """A tool's globals (main, ...), loaded from its file without running it."""
    return SimpleNamespace(**runpy.run_path(str(REPO / "tools" / f"{name}.py")))


demo, dump_text_embeddings, evaluate, train_net = (
    _tool(n) for n in ("demo", "dump_text_embeddings", "evaluate", "train_net")
)

CONFIG = str(REPO / "configs/synthetic/Base-ViLD-R18-FPN.yaml")
SMALL = [
    *SMALL_MODEL,
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "MODEL.DISTILL.METHOD",
    "vild_text",
]
TEACHER = {"arch": "distill-tiny-rn", "pretrained": "synthetic-tiny-teacher"}


def _vocab(d, dim=32, teacher=TEACHER):
    g = torch.Generator().manual_seed(0)
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    emb = F.normalize(torch.randn(len(names), dim, generator=g), dim=1)
    base = [i for i, c in enumerate(SYNTHETIC_CATEGORIES) if c["split"] == "base"]
    prov = {"teacher": teacher}
    ClassEmbeddings(emb, names, prov).save(d / f"all{dim}.npy")
    ClassEmbeddings(emb[base], [names[i] for i in base], prov).save(d / f"base{dim}.npy")
    return str(d / f"base{dim}.npy"), str(d / f"all{dim}.npy")


def opts(env, out, *extra):
    base, allv = env["vocab"]
    return [
        *SMALL,
        "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
        base,
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        allv,
        "DATASETS.ROOT",
        str(env["root"].parent),
        "OUTPUT_DIR",
        str(out),
        *extra,
    ]


def train(env, out, *extra, flags=()):
    """train_net in-process; no evaluation after training unless `extra` sets DATASETS.TEST."""
    return train_net.main(
        [
            "--config-file",
            CONFIG,
            "--backend",
            "torchvision",
            "--no-progress",
            *flags,
            *opts(env, out, "DATASETS.TEST", "()", *extra),
        ]
    )


@pytest.fixture(scope="module")
def env(synthetic_root, tmp_path_factory):
    bench = synthetic_root.parent / "synthetic"
    if not bench.exists():
        bench.symlink_to(synthetic_root)
    d = tmp_path_factory.mktemp("hard")
    e = {"root": synthetic_root, "dir": d, "vocab": _vocab(d)}
    torch.manual_seed(0)
    assert train(e, d / "run", "SOLVER.MAX_ITER", "2") == 0
    e["weights"] = d / "run" / "model_final.pth"
    return e


def err(capsys):
    e = capsys.readouterr().err
    assert "Traceback" not in e
    return e


def test_max_iter_below_warmup_warns(env, capsys, tmp_path):
    assert train(env, tmp_path / "w", "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "100") == 0
    assert "warning: SOLVER.MAX_ITER 1 is below SOLVER.WARMUP_ITERS 100" in err(capsys)


def test_fresh_train_into_a_finished_run_is_refused(env, capsys):
    run = env["dir"] / "run"
    before = run.joinpath("model_final.pth").read_bytes(), run.joinpath("metrics.json").read_text()
    assert train(env, run, "SOLVER.MAX_ITER", "2") == 2
    e = err(capsys)
    assert "holds a training run" in e and "--resume" in e and "--overwrite" in e
    assert (run.joinpath("model_final.pth").read_bytes(), run.joinpath("metrics.json").read_text()) == before


def test_overwrite_starts_again(env, tmp_path, capsys):
    out = tmp_path / "o"
    assert train(env, out, "SOLVER.MAX_ITER", "2") == 0
    assert train(env, out, "SOLVER.MAX_ITER", "2", flags=["--overwrite"]) == 0
    assert len((out / "metrics.json").read_text().splitlines()) == 1  # not appended to the first run's


def test_a_second_writer_is_refused(env, tmp_path):
    lock_output_dir(tmp_path / "busy")  # this process is the first writer
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/train_net.py"),
            "--config-file",
            CONFIG,
            "--backend",
            "torchvision",
            *opts(env, tmp_path / "busy", "SOLVER.MAX_ITER", "1"),
        ],
        capture_output=True,
        text=True,
        # the checkout under test (PYTHONPATH), where it is not the installed one
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        | {k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    )
    assert r.returncode == 2 and "another run (pid" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "busy" / "metrics.json").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        ("half", "truncated, corrupt"),
        (b"\x89PNG\r\n\x1a\n0000", "truncated, corrupt"),
        ("other", "not a model checkpoint"),
    ],
)
def test_unreadable_weights_are_one_line(env, tmp_path, capsys, content, message):
    w = tmp_path / "w.pth"
    if content == "half":
        data = env["weights"].read_bytes()
        content = data[: len(data) // 2]
    elif content == "other":
        torch.save({"optimizer": {}}, w)
    if isinstance(content, bytes):
        w.write_bytes(content)
    assert train(env, tmp_path / "e", "MODEL.WEIGHTS", str(w), flags=["--eval-only"]) == 2
    assert message in err(capsys)
    img = env["root"] / "images/val/000001.png"
    assert (
        demo.main(
            [
                "--config-file",
                CONFIG,
                "--backend",
                "torchvision",
                "--weights",
                str(w),
                "--input",
                str(img),
                "--output",
                str(tmp_path / "d"),
                *opts(env, tmp_path / "x"),
            ]
        )
        == 2
    )
    assert message in err(capsys)


def test_resume_with_a_bad_last_checkpoint(env, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    assert train(env, out, "SOLVER.MAX_ITER", "2", flags=["--resume"]) == 2
    assert "not there" in err(capsys)
    (out / "model_0000001.pth").write_bytes(env["weights"].read_bytes()[:1000])
    assert train(env, out, "SOLVER.MAX_ITER", "2", flags=["--resume"]) == 2
    assert "truncated, corrupt" in err(capsys)


def test_broken_yaml_and_output_dir_a_file(env, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("MODEL: [\n")
    assert train_net.main(["--config-file", str(tmp_path / "bad.yaml"), "--backend", "torchvision"]) == 2
    assert "not valid yaml" in err(capsys)
    (tmp_path / "file").write_text("x")
    assert train(env, tmp_path / "file", "SOLVER.MAX_ITER", "1") == 2
    e = err(capsys)
    assert "is a file" in e or "in the way" in e


def test_class_embeddings_of_another_teacher(env, tmp_path, capsys):
    base, allv = _vocab(tmp_path, teacher={"arch": "RN50", "pretrained": "openai"})
    o = opts(env, tmp_path / "t", "SOLVER.MAX_ITER", "1", "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", base)
    assert train_net.main(["--config-file", CONFIG, "--backend", "torchvision", *o]) == 2
    assert "made by teacher RN50/openai" in err(capsys)
    o = opts(
        env,
        tmp_path / "t2",
        "MODEL.WEIGHTS",
        str(env["weights"]),
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        allv,
    )
    assert train_net.main(["--config-file", CONFIG, "--backend", "torchvision", "--eval-only", *o]) == 2
    assert "TEST_CLASS_EMBEDDINGS: made by teacher RN50/openai" in err(capsys)
    img = env["root"] / "images/val/000001.png"
    assert (
        demo.main(
            [
                "--config-file",
                CONFIG,
                "--backend",
                "torchvision",
                "--weights",
                str(env["weights"]),
                "--input",
                str(img),
                "--output",
                str(tmp_path / "d"),
                *o,
            ]
        )
        == 2
    )
    assert "made by teacher RN50/openai" in err(capsys)


def test_region_store_of_other_images_or_dim(env, tmp_path, capsys):
    from tests.teacher.test_input_checks import _store

    store = _store(tmp_path / "s", 32, [10_000, 10_001])
    o = opts(env, tmp_path / "rs", "SOLVER.MAX_ITER", "1", "MODEL.DISTILL.METHOD", "vild")
    o += ["MODEL.DISTILL.VILD.REGION_STORE", store]
    assert train_net.main(["--config-file", CONFIG, "--backend", "torchvision", *o]) == 2
    assert "covers none of the" in err(capsys)
    base64, _ = _vocab(tmp_path, dim=64)
    o += ["MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", base64, "OUTPUT_DIR", str(tmp_path / "rs2")]
    assert train_net.main(["--config-file", CONFIG, "--backend", "torchvision", *o]) == 2
    assert "TRAIN_CLASS_EMBEDDINGS holds 64-dim" in err(capsys)


def test_demo_folder_runs_skip_and_never_draw_over_inputs(env, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in ("000001.png", "000002.png"):
        (imgs / n).write_bytes((env["root"] / "images/val" / n).read_bytes())
    (imgs / "000000.png").write_bytes(b"not an image")
    before = {p.name: p.read_bytes() for p in imgs.iterdir()}
    args = [
        "--config-file",
        CONFIG,
        "--backend",
        "torchvision",
        "--weights",
        str(env["weights"]),
        "--score-thresh",
        "0.0",
        *opts(env, tmp_path / "x"),
    ]
    assert demo.main(["--input", str(imgs), "--output", str(imgs), *args]) == 2
    assert "--input folder" in err(capsys)
    assert {p.name: p.read_bytes() for p in imgs.iterdir()} == before
    out = tmp_path / "out"
    assert demo.main(["--input", str(imgs), "--output", str(out), *args]) == 2  # the bad one is skipped
    e = err(capsys)
    assert "skipped" in e and "000000.png" in e and "cannot decode image" in e
    pred = json.loads((out / "predictions.json").read_text())
    assert [p["file_name"] for p in pred["images"]] == [str(imgs / "000001.png"), str(imgs / "000002.png")]
    assert (out / "000001.png").is_file() and (out / "000002.png").is_file()
    # the demo's predictions.json evaluates against the dataset's ground truth (images matched by file name)
    gt = env["root"] / "annotations/instances_val.json"
    assert (
        evaluate.main(
            ["--gt", str(gt), "--predictions", str(out / "predictions.json"), "--output", str(out / "m.json")]
        )
        == 0
    )
    assert "AP50" in json.loads((out / "m.json").read_text())
    assert (
        evaluate.main(["--gt", str(gt), "--predictions", str(out / "predictions.json"), "--output", str(gt)])
        == 2
    )
    assert "would overwrite the input" in err(capsys)


def test_demo_vocabulary_flags_and_output_a_file(env, tmp_path, capsys):
    img = env["root"] / "images/val/000001.png"
    args = [
        "--config-file",
        CONFIG,
        "--backend",
        "torchvision",
        "--weights",
        str(env["weights"]),
        "--input",
        str(img),
        *opts(env, tmp_path / "x"),
    ]
    assert (
        demo.main(
            [*args, "--output", str(tmp_path / "o"), "--vocabulary", "coco", "--custom-vocabulary", "cat,dog"]
        )
        == 2
    )
    assert "--custom-vocabulary needs --vocabulary custom" in err(capsys)
    (tmp_path / "f").write_text("x")
    assert demo.main([*args, "--output", str(tmp_path / "f")]) == 2
    assert "a file is in the way" in err(capsys)


def test_dump_text_embeddings_mistyped_path_and_bad_output(tmp_path, capsys):
    for spec in ("datasets/coco/annotations/instances_val2017.jsn", "names/pets"):
        assert (
            dump_text_embeddings.main(
                ["--teacher", "x", "--vocabulary", spec, "--output", str(tmp_path / "a.npy")]
            )
            == 2
        )
        assert "vocabulary file not found" in err(capsys)
    (tmp_path / "names.txt").write_text("cat\n")
    assert (
        dump_text_embeddings.main(
            [
                "--teacher",
                "x",
                "--vocabulary",
                str(tmp_path / "names.txt"),
                "--output",
                str(tmp_path / "names.txt"),
            ]
        )
        == 2
    )
    assert "--output must be a .npy" in err(capsys)
    assert (tmp_path / "names.txt").read_text() == "cat\n"


def test_checkpoint_carries_backend_and_the_right_one_is_picked(env, tmp_path, capsys, monkeypatch):
    from distill.utils.checkpoint import checkpoint_meta

    meta = checkpoint_meta(env["weights"])
    assert meta["backend"] == "torchvision" and "MODEL:" in meta["config"]
    assert meta["vocabulary"]["provenance"]["teacher"] == TEACHER
    from distill.integrations import backend

    monkeypatch.setattr(backend, "detectron2_installed", lambda: True)  # as with detectron2 installed
    assert backend.backend_name_for("auto", str(env["weights"])) == "torchvision"
    with pytest.raises(Exception, match="pass --backend torchvision"):
        backend.backend_name_for("detectron2", str(env["weights"]))
    # the demo from anywhere: the config's training embeddings need not exist for inference
    img = env["root"] / "images/val/000001.png"
    o = opts(env, tmp_path / "x", "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS", "output/nowhere/base.npy")
    assert (
        demo.main(
            [
                "--config-file",
                CONFIG,
                "--weights",
                str(env["weights"]),
                "--input",
                str(img),
                "--output",
                str(tmp_path / "d"),
                *o,
            ]
        )
        == 0
    )
    assert (tmp_path / "d" / "000001.png").is_file()
    # nor its --config-file: the checkpoint's own config is used
    assert (
        demo.main(["--weights", str(env["weights"]), "--input", str(img), "--output", str(tmp_path / "e")])
        == 0
    )
    assert (tmp_path / "e" / "predictions.json").is_file()


def test_train_on_own_coco_json_by_name(env, tmp_path, capsys):
    root = env["root"]
    spec = f"coco:{root / 'annotations/instances_train.json'}:{root / 'images/train'}"
    val = f"coco:{root / 'annotations/instances_val.json'}:{root / 'images/val'}"
    assert (
        train(
            env,
            tmp_path / "own",
            "SOLVER.MAX_ITER",
            "1",
            "DATASETS.TRAIN",
            f"('{spec}',)",
            "DATASETS.TEST",
            f"('{val}',)",
        )
        == 0
    )
    assert "AP50" in capsys.readouterr().out
    assert (
        train(
            env,
            tmp_path / "own2",
            "SOLVER.MAX_ITER",
            "1",
            "DATASETS.TRAIN",
            f"('coco:{root}/nope.json:{root}',)",
        )
        == 2
    )
    assert "annotation file of dataset" in err(capsys)


def test_semseg_demo_with_300_classes_writes_16_bit_labels(env, tmp_path, capsys):
    import cv2

    from distill.integrations.torchvision.sem_seg.model import build_sem_seg_model, save_segmenter
    from distill.model_zoo import get_config_file
    from distill.teacher import create_teacher

    SEMSEG_CONFIG = get_config_file("synthetic/semseg_r18_fpn_quick.yaml")
    cfg = __import__("distill.config", fromlist=["load_config"]).load_config(
        SEMSEG_CONFIG,
        ["MODEL.WEIGHTS", "", "MODEL.DISTILL.SEM_SEG.CONVS_DIM", "16", "MODEL.FPN.OUT_CHANNELS", "16"],
    )
    t = cfg.MODEL.DISTILL.TEACHER
    dim = create_teacher(t.ARCH, t.PRETRAINED).dim
    vocab = ClassEmbeddings(F.normalize(torch.randn(3, dim), dim=1), ["a", "b", "c"])
    torch.manual_seed(0)
    save_segmenter(build_sem_seg_model(cfg, vocab, [1, 2, 3]), tmp_path / "seg.pth", cfg)
    names = ",".join(f"thing{i}" for i in range(300))
    img = env["root"] / "images/val/000001.png"
    assert (
        demo.main(
            [
                "--task",
                "semseg",
                "--config-file",
                SEMSEG_CONFIG,
                "--weights",
                str(tmp_path / "seg.pth"),
                "--input",
                str(img),
                "--output",
                str(tmp_path / "o"),
                "--custom-vocabulary",
                names,
                "MODEL.DISTILL.TEACHER.TEMPLATES",
                "simple",
            ]
        )
        == 0
    )
    labels = cv2.imread(str(tmp_path / "o" / "000001_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == "uint16" and labels.shape == (96, 96) and labels.max() <= 300


def test_full_disk_or_read_only_output_is_one_line(env, tmp_path, capsys, monkeypatch):
    import errno
    import os

    gt = env["root"] / "annotations/instances_val.json"
    preds = tmp_path / "p.json"
    im, cat = (json.loads(gt.read_text())[k][0]["id"] for k in ("images", "categories"))
    preds.write_text(json.dumps([{"image_id": im, "category_id": cat, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    for code, words in ((errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system")):

        def fail(*a, _code=code, **k):
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(os, "replace", fail)
        assert (
            evaluate.main(
                ["--gt", str(gt), "--predictions", str(preds), "--output", str(tmp_path / "m.json")]
            )
            == 2
        )
        assert words in err(capsys)
        assert (
            dump_text_embeddings.main(
                [
                    "--teacher",
                    "synthetic-tiny-teacher",
                    "--vocabulary",
                    "cat,dog",
                    "--output",
                    str(tmp_path / "v.npy"),
                ]
            )
            == 2
        )
        assert words in err(capsys)
        monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # nothing half written


def test_demo_on_a_one_pixel_sliver(env, tmp_path, capsys):
    import cv2
    import numpy as np

    img = tmp_path / "sliver.png"
    cv2.imwrite(str(img), np.full((1, 800, 3), 128, np.uint8))  # resized to 96 px short side, 0 rows before
    args = ["--config-file", CONFIG, "--backend", "torchvision", "--weights", str(env["weights"])]
    out = tmp_path / "out"
    assert demo.main([*args, "--input", str(img), "--output", str(out), *opts(env, tmp_path / "x")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    pred = json.loads((out / "predictions.json").read_text())
    assert [(p["width"], p["height"]) for p in pred["images"]] == [(800, 1)]


def test_resume_with_nothing_to_resume_says_so(env, tmp_path, capsys):
    missing = tmp_path / "never_trained"
    assert train(env, missing, "SOLVER.MAX_ITER", "2", flags=["--resume"]) == 2
    e = err(capsys)
    assert "--resume: no checkpoint to continue from" in e and "run without --resume" in e
    assert not missing.exists()  # nothing created
    killed_early = tmp_path / "early"  # a run killed before its first checkpoint leaves only metrics
    killed_early.mkdir()
    (killed_early / "metrics.json").write_text("")
    assert train(env, killed_early, "SOLVER.MAX_ITER", "2", flags=["--resume"]) == 2
    assert "--overwrite starts again" in err(capsys)


def test_demo_skips_truncated_jpeg_and_png(env, tmp_path, capsys):
    """A file cut short is skipped, counted and listed like an undecodable one, not drawn as if whole."""
    import cv2

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    good = env["root"] / "images/val/000001.png"
    (imgs / "good.png").write_bytes(good.read_bytes())
    rgb = cv2.imread(str(good))
    for ext in (".jpg", ".png"):
        data = cv2.imencode(ext, rgb)[1].tobytes()
        (imgs / f"cut{ext}").write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    args = ["--backend", "torchvision", "--weights", str(env["weights"]), *opts(env, tmp_path / "x")]
    assert demo.main(["--config-file", CONFIG, "--input", str(imgs), "--output", str(out), *args]) == 2
    e = err(capsys)
    assert "skipped 2 of 3 input(s)" in e and "cut.jpg" in e and "cut.png" in e and "truncated" in e
    pred = json.loads((out / "predictions.json").read_text())
    assert [p["file_name"] for p in pred["images"]] == [str(imgs / "good.png")]
    assert sorted(p.name for p in out.glob("*.png")) == ["good.png"]


def test_fine_tuning_from_the_other_backends_checkpoint_is_refused(env, tmp_path, capsys):
    """detectron2's loader would skip every tensor of a torchvision checkpoint and train from scratch unsaid."""
    ckpt = tmp_path / "d2.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "distill": {"backend": "detectron2"}}, ckpt)
    assert train(env, tmp_path / "ft", "SOLVER.MAX_ITER", "1", "MODEL.WEIGHTS", str(ckpt)) == 2
    assert "trained with the detectron2 backend; pass --backend detectron2" in err(capsys)
    assert not (tmp_path / "ft").exists()
