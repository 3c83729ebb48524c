"""tools/train_teacher.py on the method benchmark's world: its corpus, its vocabulary, its base / novel split."""

import importlib.util
import json

import pytest
import torch

from distill.data.synthetic import SyntheticConfig, generate
from distill.data.synthetic_methods import METHODS_CATEGORIES, MethodsWorldConfig
from distill.teacher import training
from distill.teacher.train_config import TeacherTrainConfig
from tests.conftest import REPO

TINY = ["--arch", "distill-tiny-rn", "--corpus-images", "3", "--steps", "2", "--batch-size", "4"]


def _tool():
    spec = importlib.util.spec_from_file_location("train_teacher_tool", REPO / "tools" / "train_teacher.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def methods_bench(tmp_path_factory):
    cfg = MethodsWorldConfig(num_train=1, num_val=4, image_size=64)
    return generate(tmp_path_factory.mktemp("methods") / "world", cfg, progress=False)


def test_methods_world_trains_on_its_vocabulary_and_reports_base_and_novel(tmp_path, methods_bench, capsys):
    rc = _tool().main(
        [*TINY, "--world", "methods", "--output-dir", str(tmp_path / "t"), "--benchmark", str(methods_bench)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    corpus = json.loads((tmp_path / "t" / "corpus" / "meta.json").read_text())
    assert corpus["world"] == "methods" and corpus["config"]["num_train"] == 3
    captioned = {
        a["category_id"]
        for a in json.loads((tmp_path / "t/corpus/annotations/captions_train.json").read_text())[
            "annotations"
        ]
    }
    assert captioned <= {c["id"] for c in METHODS_CATEGORIES} and captioned
    result = json.loads(out.strip().splitlines()[-1])
    val = json.loads((methods_bench / "annotations" / "instances_val.json").read_text())
    assert result["num_objects"] == len(val["annotations"])
    assert all(0 <= result[k] <= 100 for k in ("acc_all", "acc_base", "acc_novel"))
    assert f"base {result['acc_base']:.1f}  novel {result['acc_novel']:.1f}" in out
    saved = torch.load(tmp_path / "t" / "last.pt", weights_only=False)["config"]
    assert saved["world"] == "methods"


def test_the_weights_come_as_safetensors_with_their_recipe(tmp_path):
    from safetensors import safe_open

    from distill.teacher import create_teacher

    cfg = TeacherTrainConfig(world="methods", corpus_images=3, steps=1, batch_size=4)
    pt = torch.load(training.train_teacher(tmp_path, cfg, progress=False), weights_only=True)
    path = tmp_path / "teacher_fp16.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == sorted(pt) and all(torch.equal(f.get_tensor(k), pt[k]) for k in pt)
    assert meta["world"] == "methods" and json.loads(meta["recipe"])["steps"] == 1
    moved = tmp_path / "elsewhere" / "t.safetensors"  # away from its corpus: the metadata still tells
    moved.parent.mkdir()
    moved.write_bytes(path.read_bytes())
    teacher = create_teacher("distill-tiny-rn", str(moved))
    assert teacher.world.unknown([c["name"] for c in METHODS_CATEGORIES]) == []


def test_a_benchmark_of_another_world_is_one_clear_error(tmp_path, methods_bench, capsys):
    rc = _tool().main(
        ["--eval-only", "--teacher", "synthetic-tiny-teacher", "--benchmark", str(methods_bench)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--benchmark is a methods world, not quickstart (pass --world methods)" in err


def test_the_default_corpus_is_the_quickstart_world_as_before():
    cfg = TeacherTrainConfig()
    assert cfg.world == "quickstart"
    assert training.corpus_config(cfg) == SyntheticConfig(seed=1000, num_train=4000, num_val=0)
    assert training.corpus_config(TeacherTrainConfig(world="methods", corpus_images=7)) == MethodsWorldConfig(
        seed=1000, num_train=7, num_val=0
    )


def test_a_checkpoint_written_before_the_world_setting_resumes(tmp_path):
    small = dict(arch="distill-tiny-rn", corpus_images=3, steps=2, batch_size=4, checkpoint_every=1)
    whole = torch.load(training.train_teacher(tmp_path / "a", TeacherTrainConfig(**small), progress=False))
    out = tmp_path / "b"
    training.train_teacher(out, TeacherTrainConfig(**{**small, "steps": 2}), progress=False)
    state = torch.load(out / "last.pt", weights_only=False)
    del state["config"]["world"]  # as an earlier version wrote it
    torch.save(state, out / "last.pt")
    resumed = torch.load(training.train_teacher(out, TeacherTrainConfig(**small), progress=False))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_methods_world_checkpoint_knows_its_vocabulary(tmp_path):
    from distill.teacher.domain import training_world

    weights = tmp_path / "t" / "teacher_fp16.pt"
    generate(
        tmp_path / "t" / "corpus", MethodsWorldConfig(num_train=1, num_val=0, image_size=64), progress=False
    )
    names = [c["name"] for c in METHODS_CATEGORIES]
    assert training_world("distill-tiny-rn", str(weights)).unknown(names) == []
    # weights beside a quickstart corpus, or alone: the quickstart's vocabulary, without the patterns
    assert training_world("distill-tiny-rn", str(tmp_path / "x.pt")).unknown(["striped heart"]) == [
        "striped heart"
    ]
