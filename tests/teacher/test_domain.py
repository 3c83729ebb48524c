"""The tiny teachers know their training world: names outside its vocabulary and images outside it give one
warning line per run, naming a real teacher; real teachers give none."""

import os
import shutil
import subprocess
import sys

import pytest

from distill.data.synthetic import COLOUR_NAMES, SYNTHETIC_CATEGORIES
from distill.model_zoo import get_entry
from distill.teacher import domain
from distill.teacher.domain import check_images, check_names, training_world
from tests.conftest import REPO
from tests.teacher.conftest import tiny_teacher, tiny_weights  # noqa: F401  (fixtures)

SHAPES = [c["name"] for c in SYNTHETIC_CATEGORIES]


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch):
    """Each test is a new run: nothing warned yet."""
    monkeypatch.setattr(domain, "_warned", set())


def _warnings(capsys) -> list[str]:
    """The warning lines written to stderr since the last call."""
    err = capsys.readouterr().err
    return [ln.removeprefix("warning: ") for ln in err.splitlines() if ln.startswith("warning: ")]


def test_shipped_teacher_records_the_words_it_was_trained_on():
    rec = get_entry("synthetic-tiny-teacher")["trained_on"]
    # the manifest's record is the caption generator's vocabulary, not a copy that drifts
    assert rec["classes"] == SHAPES and rec["attributes"] == list(COLOUR_NAMES)
    for arch, pretrained in [("distill-tiny-rn", "synthetic-tiny-teacher"), ("synthetic-tiny-teacher", None)]:
        world = training_world(arch, pretrained)
        assert world.label == "synthetic-tiny-teacher" and world.classes == tuple(SHAPES)
    assert training_world("ViT-B-32", "openai") is None
    assert training_world("distill-tiny-vit", "none") is None  # random weights: warned about elsewhere
    # a checkpoint of the project's tiny architectures can only come from tools/train_teacher.py
    assert training_world("distill-tiny-vit", "/x/teacher_fp16.pt").classes == tuple(SHAPES)


def _derived_file(path, base: dict):
    """A teacher file as tools/train_clipself.py writes it: its base teacher in the metadata's provenance."""
    import json

    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(path), metadata={"provenance": json.dumps({"base": base})})
    return str(path)


def test_a_clipself_teacher_knows_what_its_base_knew(tmp_path):
    from distill.data.synthetic_methods import METHODS_CATEGORIES

    zoo = _derived_file(
        tmp_path / "a.safetensors", {"arch": "distill-tiny-vit", "zoo_name": "methods-tiny-vit"}
    )
    world = training_world("distill-tiny-vit", zoo)
    assert world.classes == tuple(c["name"] for c in METHODS_CATEGORIES)
    assert "a.safetensors" in world.label and "methods-tiny-vit" in world.label
    assert world.unknown(["striped heart", "pentagon", "cat"]) == ["cat"]
    # a base that is itself a file: what that file's base knew
    chained = _derived_file(tmp_path / "b.safetensors", {"arch": "distill-tiny-vit", "path": zoo})
    assert training_world("distill-tiny-vit", chained).classes == world.classes
    # a real CLIP base, or random weights: nothing narrow to warn about
    real = _derived_file(tmp_path / "c.safetensors", {"arch": "ViT-B-16", "pretrained": "openai"})
    assert training_world("ViT-B-16", real) is None
    rand = _derived_file(tmp_path / "d.safetensors", {"arch": "distill-tiny-vit", "pretrained": "none"})
    assert training_world("distill-tiny-vit", rand) is None


def test_unknown_names():
    world = training_world("synthetic-tiny-teacher", None)
    names = ["cat", "red star", "the circle", "Hexagon", "dog", "123", "star_ring"]
    assert world.unknown(names) == ["cat", "dog", "123"]


def test_encode_text_warns_once_per_run(tiny_teacher, capsys):  # noqa: F811
    tiny_teacher.encode_text(["star", "red circle"], "simple")
    assert _warnings(capsys) == []
    tiny_teacher.encode_text(["cat", "star", "dog"], "simple")
    tiny_teacher.encode_text(["cat", "star", "dog"], "simple")
    (line,) = _warnings(capsys)
    assert "'cat', 'dog' are outside its vocabulary" in line and "circle" in line and "\n" not in line
    assert "--teacher ViT-B-32 --pretrained openai" in line


def test_real_teacher_never_warns(capsys):
    assert check_names(training_world("ViT-B-32", "openai"), ["cat", "dog"]) is None
    assert check_images(training_world("ViT-B-32", "openai"), ["/photos/cat.jpg"]) is None
    assert _warnings(capsys) == []


def test_cached_text_embeddings_warn_too(tmp_path, monkeypatch, capsys):
    from distill.teacher.vocabulary import vocabulary_embeddings

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    vocabulary_embeddings(["cat", "star"], "distill-tiny-rn", "synthetic-tiny-teacher", "simple")
    monkeypatch.setattr(domain, "_warned", set())  # the next run, answered from the cache
    vocabulary_embeddings(["cat", "star"], "distill-tiny-rn", "synthetic-tiny-teacher", "simple")
    said = _warnings(capsys)
    assert len(said) == 2 and all("'cat' is outside" in w for w in said)


def test_images_outside_the_synthetic_world_warn_once(synthetic_root, tmp_path, capsys):
    world = training_world("synthetic-tiny-teacher", None)
    bench = sorted((synthetic_root / "images" / "val").iterdir())[:3]
    assert check_images(world, bench) is None
    photo = tmp_path / "holiday" / "cat.png"  # any image not in a synthetic world: a photo for all we know
    photo.parent.mkdir()
    shutil.copy(bench[0], photo)
    for _ in range(2):
        assert "cat.png is not one of them" in check_images(world, [*bench, photo])
    assert len(_warnings(capsys)) == 1


def test_web_demo_page_says_it(capsys):
    from distill.config import load_config
    from distill.integrations.web_demo import vocabulary_note, world_note

    cfg = load_config(str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml"))
    assert "trained only on synthetic shapes" in world_note(cfg)
    assert "'dog' is outside" in vocabulary_note(cfg, "star, dog")
    assert vocabulary_note(cfg, "star, circle") is None
    opts = ["MODEL.DISTILL.TEACHER.ARCH", "ViT-B-32", "MODEL.DISTILL.TEACHER.PRETRAINED", "openai"]
    real = load_config(str(REPO / "configs/synthetic/vild_r18_fpn_quick.yaml"), opts)
    assert world_note(real) is None and vocabulary_note(real, "cat, dog") is None


def test_dump_text_embeddings_says_it_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILL_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable,
        str(REPO / "tools/dump_text_embeddings.py"),
        "--teacher",
        "synthetic-tiny-teacher",
    ]
    r = subprocess.run(
        [*args, "--vocabulary", "cat,dog,star", "--output", tmp_path / "pets.npy"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "outside its vocabulary" in ln]
    assert len(lines) == 1 and "'cat', 'dog'" in lines[0] and "'star'" not in lines[0], r.stderr


@pytest.mark.parametrize("photos", [False, True], ids=["benchmark", "photos"])
def test_region_dump_of_photos_says_so(tiny_teacher, synthetic_root, tmp_path, capsys, photos):  # noqa: F811
    import torch

    from distill.teacher.regions import dump_region_embeddings

    files = sorted((synthetic_root / "images" / "val").iterdir())[:2]
    if photos:
        (tmp_path / "photos").mkdir()
        files = [shutil.copy(f, tmp_path / "photos" / f.name) for f in files]
    dicts = [{"image_id": i, "file_name": str(f)} for i, f in enumerate(files)]
    boxes = {i: torch.tensor([[2.0, 3.0, 40.0, 50.0]]) for i in range(len(files))}
    dump_region_embeddings(tiny_teacher, dicts, boxes, tmp_path / "store", progress=False, num_workers=0)
    said = [w for w in _warnings(capsys) if "is not one of them" in w]
    assert len(said) == (1 if photos else 0), said
