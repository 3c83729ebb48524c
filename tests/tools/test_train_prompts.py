import json

import torch

from distill.teacher import ClassEmbeddings, create_teacher
from tests.conftest import load
from tests.teacher.conftest import tiny_weights  # noqa: F401  (fixture)
from tests.tools.test_teacher_tools import tool


def test_train_prompts_file_works_in_dump_text_embeddings_and_resumes(tmp_path, synthetic_root, tiny_weights):  # noqa: F811
    out = tmp_path / "coop.safetensors"
    common = [
        "--method",
        "coop",
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        tiny_weights,
        "--benchmark",
        synthetic_root,
        "--output",
        out,
        "--steps",
        "4",
        "--checkpoint-every",
        "2",
        "--no-progress",
    ]
    r = tool("train_prompts.py", *common, extra_env={"DISTILL_PROGRESS_EVERY": "0"})
    assert r.returncode == 0, r.stderr
    # no bar into a pipe: periodic lines (here every update), never a \r-joined one
    assert "\r" not in r.stderr and "GT crops: " in r.stderr and "coop: 4/4 it (100%)" in r.stderr
    meta = json.loads((tmp_path / "coop.safetensors.json").read_text())
    assert (
        meta["method"] == "coop"
        and meta["m"] == 4
        and meta["training_data"]["source"] == "ground-truth crops"
    )
    assert meta["training_data"]["num_samples"] > 0
    sha = meta["sha256"]
    r = tool("train_prompts.py", *common)
    assert r.returncode == 2 and "output exists" in r.stderr and "Traceback" not in r.stderr
    out.unlink()
    r = tool("train_prompts.py", *common, "--resume")  # the checkpoint is at the last step: same file again
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "coop.safetensors.json").read_text())["sha256"] == sha
    assert "resumed coop at step 4" in (tmp_path / "coop.safetensors.work" / "log.txt").read_text()

    gt = synthetic_root / "annotations/instances_val.json"
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--pretrained",
        tiny_weights,
        "--vocabulary",
        gt,
        "--templates",
        out,
        "--output",
        tmp_path / "e.npy",
    )
    assert r.returncode == 0, r.stderr
    e = ClassEmbeddings.load(tmp_path / "e.npy")
    assert (
        e.provenance["learned_prompts"]["method"] == "coop"
        and e.provenance["learned_prompts"]["sha256"] == sha
    )
    names = [c["name"] for c in sorted(load(gt)["categories"], key=lambda c: c["id"])]
    teacher = create_teacher("distill-tiny-vit", str(tiny_weights))
    torch.testing.assert_close(e.embeddings, teacher.encode_text(names, str(out)), atol=1e-6, rtol=0)


def test_train_prompts_bad_input_is_one_line(tmp_path, synthetic_root, tiny_weights):  # noqa: F811
    base = ["--teacher", "distill-tiny-vit", "--pretrained", tiny_weights, "--benchmark", synthetic_root]
    r = tool("train_prompts.py", "--method", "detpro", *base, "--output", tmp_path / "d.safetensors")
    assert r.returncode == 2 and "--region-store" in r.stderr and "Traceback" not in r.stderr
    r = tool("train_prompts.py", "--method", "coop", *base, "--output", tmp_path / "d.pt")
    assert r.returncode == 2 and "must end in .safetensors" in r.stderr
    r = tool(
        "dump_text_embeddings.py",
        "--teacher",
        "distill-tiny-vit",
        "--vocabulary",
        "cat",
        "--templates",
        tmp_path / "missing.safetensors",
        "--output",
        tmp_path / "x.npy",
    )
    assert r.returncode == 2 and "learned-prompt file not found" in r.stderr


def test_resume_with_nothing_to_resume_says_so(tmp_path, synthetic_root):
    out = tmp_path / "p.safetensors"
    args = ["--method", "coop", "--teacher", "distill-tiny-vit", "--benchmark", synthetic_root]
    r = tool("train_prompts.py", *args, "--output", out, "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--resume: no checkpoint to continue from" in r.stderr and "run without --resume" in r.stderr
