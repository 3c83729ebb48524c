"""benchmarks/methods.py end to end on a tiny world: every registered method, one seed, three iterations; the
table's shape, every number finite, cells cached on a second run."""

import json
import math
import os
import subprocess
import sys

from distill.methods import method_names
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "methods.py"
TINY = ["--seeds", "0", "--iters", "3", "--num-train", "24", "--num-val", "12", "--image-size", "64"]
TINY += ["--prompt-steps", "2"]
# F-ViT's cell on a random tiny ViT (the shipped one is the real schedule's)
VIT = ["--vit-teacher", "distill-tiny-vit", "--vit-teacher-weights", "none"]
VIT += ["--clipself-teacher", "distill-tiny-vit", "--clipself-teacher-weights", "none"]
TINY_SOLVER = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1"]
METRICS = {"box_AP50_novel", "box_AP50_base", "box_AP50_all", "mask_AP_novel", "APr", "APc", "APf"}
COSTS = {
    "cpu_s_text",
    "cpu_s_proposal_network",
    "cpu_s_proposals",
    "cpu_s_regions",
    "cpu_s_training",
    "cpu_s_evaluation",
    "cpu_s_total",
    "teacher_forwards_per_train_image",
}


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the checkout under test, not an installed copy (the script's own folder is first on its path)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=_env(), timeout=600
    )


def test_methods_benchmark_smoke(tmp_path):
    out = tmp_path / "bench"
    r = _run("run", "--output-dir", out, "--no-progress", *TINY, *VIT, *TINY_SOLVER)
    assert r.returncode == 0, r.stderr[-3000:]
    # rows of their own: F-ViT on the CLIPSelf teacher, ViLD on CoOp's and DetPro's learned prompts
    methods = [*method_names(), "fvit_clipself", "vild_coop", "vild_detpro"]
    for m in methods:
        assert (out / "seed0" / m / "metrics.json").is_file()
    # F-VLM's ensemble weights on its trained cell: the detector alone and the VLM alone become rows
    r = _run("sweep", "--output-dir", out, "--method", "fvlm", "--pairs", "0,0", "1,1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| 0 | 0 | 1 |" in r.stdout and "| 1 | 1 | 1 |" in r.stdout
    r = _run("report", "--output-dir", out, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads(r.stdout)["methods"]
    sweep_rows = {"fvlm (detector only)", "fvlm (VLM only)"}
    assert sorted(table) == sorted([*methods, *sweep_rows])
    for name in sweep_rows:
        assert set(table.pop(name)) == METRICS
    for m, row in table.items():
        assert set(row) == METRICS | COSTS
        for name, cell in row.items():
            assert set(cell) == {"mean", "std", "per_seed"} and list(cell["per_seed"]) == ["0"]
            assert all(math.isfinite(cell[k]) for k in ("mean", "std")), (m, name, cell)
    # a method without a region store pays no teacher forwards and no proposal stages; ViLD pays both
    assert table["vild_text"]["teacher_forwards_per_train_image"]["mean"] == 0
    assert table["vild_text"]["cpu_s_regions"]["mean"] == 0
    assert table["vild"]["teacher_forwards_per_train_image"]["mean"] > 0
    assert table["vild"]["cpu_s_regions"]["mean"] > 0
    # F-VLM: no proposal stages, no store, but its training runs the teacher's tower on every image it sees
    assert (
        table["fvlm"]["cpu_s_regions"]["mean"] == 0 and table["fvlm"]["cpu_s_proposal_network"]["mean"] == 0
    )
    # ... for twice the iterations: the methods on the student's backbone fine-tune the proposal network (--init)
    assert table["fvlm"]["teacher_forwards_per_train_image"]["mean"] == 2 * 3 * 2 / 24
    assert (out / "seed0" / "vild_text" / "train" / "model_final.pth").is_file()  # ViLD-text fine-tuned too
    assert table["vild_text"]["cpu_s_proposal_network"]["mean"] > 0
    # BARON: the proposal network (its start), no region store, its teacher's crops counted over its training
    assert (
        table["baron"]["cpu_s_regions"]["mean"] == 0 and table["baron"]["cpu_s_proposal_network"]["mean"] > 0
    )
    assert table["baron"]["teacher_forwards_per_train_image"]["mean"] > 0
    # the CLIPSelf row trains F-ViT on its own teacher's class embeddings
    import torch

    ckpt = out / "seed0" / "fvit_clipself" / "train" / "model_final.pth"
    cfg = torch.load(ckpt, map_location="cpu", weights_only=False)["distill"]["config"]
    assert "text_clipself/synthetic_base.npy" in cfg and "METHOD: fvit" in cfg
    # ... and ViLD on the learned prompts' class embeddings (their learning is the row's text cost)
    for prompts in ("coop", "detpro"):
        ckpt = out / "seed0" / f"vild_{prompts}" / "train" / "model_final.pth"
        cfg = torch.load(ckpt, map_location="cpu", weights_only=False)["distill"]["config"]
        assert f"text_{prompts}/synthetic_base.npy" in cfg and "METHOD: vild\n" in cfg
        assert (out / "seed0" / "shared" / "prompts" / f"{prompts}.safetensors").is_file()
        assert table[f"vild_{prompts}"]["cpu_s_regions"]["mean"] > 0
    # --page writes the table's JSON and its markdown into a page's block
    page = tmp_path / "page.md"
    page.write_text("# title\n\n<!-- methods-table:start -->\nold\n<!-- methods-table:end -->\n\nafter\n")
    r = _run("report", "--output-dir", out, "--page", page, "--json-out", tmp_path / "t.json")
    assert r.returncode == 0, r.stderr[-3000:]
    text = page.read_text()
    assert "old" not in text and text.endswith("<!-- methods-table:end -->\n\nafter\n")
    assert "| fvlm (VLM only) | 1 |" in text and json.loads((tmp_path / "t.json").read_text())["methods"]
    # the novel classes in two groups by their names' words (benchmarks/novel_words.py), per cell
    words = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "novel_words.py"), "--output-dir", str(out), "--json"],
        capture_output=True, text=True, env=_env(), timeout=600,
    )  # fmt: skip
    assert words.returncode == 0, words.stderr[-2000:]
    split = json.loads(words.stdout)
    assert split["groups"] == {"novel_shared": 15, "novel_unshared": 4}
    assert sorted(split["rows"]) == sorted(methods)
    # a second run finds every cell done; another schedule in the same folder is refused
    again = _run("run", "--output-dir", out, "--no-progress", *TINY, *VIT, *TINY_SOLVER)
    assert again.returncode == 0 and again.stdout.count(": cached") == len(methods), again.stderr[-2000:]
    # a table kept without its files (the committed cells: metrics and costs only): a cell run later remakes
    # the shared stage it needs rather than trusting the record
    import shutil

    shutil.rmtree(out / "seed0" / "shared" / "regions")
    (out / "seed0" / "vild" / "metrics.json").unlink()
    again = _run("run", "--output-dir", out, "--no-progress", "--methods", "vild", *TINY, *VIT, *TINY_SOLVER)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "regions: recorded but its files are gone, made again" in again.stdout
    assert (out / "seed0" / "shared" / "regions" / "index.json").is_file()
    other = _run("run", "--output-dir", out, *TINY[:-3], "96", *TINY[-2:], *VIT, *TINY_SOLVER)  # image size
    assert other.returncode == 2 and "another schedule" in other.stderr


def test_report_of_an_empty_folder_is_one_line(tmp_path):
    r = _run("report", "--output-dir", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no finished cell" in r.stderr


def test_a_run_that_failed_before_any_stage_binds_no_schedule(tmp_path):
    tiny = [
        "--output-dir",
        tmp_path,
        "--seeds",
        "0",
        "--num-train",
        "4",
        "--num-val",
        "2",
        "--image-size",
        "64",
    ]
    for teacher in ("no-such-teacher", "nor-this-one"):  # the second is judged on its teacher, not refused
        r = _run("run", *tiny, *VIT, "--methods", "vild_text", "--teacher", teacher)
        assert r.returncode == 2 and teacher in r.stderr and "another schedule" not in r.stderr, r.stderr


def test_the_pages_table_is_the_committed_json():
    """docs/methods_benchmark.md shows docs/results/methods.json, rendered by the script's own function."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("methods_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = json.loads((REPO / "docs" / "results" / "methods.json").read_text())
    page = (REPO / "docs" / "methods_benchmark.md").read_text()
    block = page.split(mod.PAGE_START, 1)[1].split(mod.PAGE_END, 1)[0]
    assert mod.render_markdown(table) in block


def test_novel_classes_split_by_their_names_words():
    import importlib.util

    from distill.data.synthetic_methods import METHODS_CATEGORIES

    spec = importlib.util.spec_from_file_location("novel_words", SCRIPT.parent / "novel_words.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cats = [
        {"id": 1, "name": "red car", "split": "base"},
        {"id": 2, "name": "blue bus", "split": "base"},
        {"id": 3, "name": "red bus", "split": "novel"},
        {"id": 4, "name": "kite", "split": "novel"},
    ]
    assert mod.word_groups(cats) == {"novel_shared": (3,), "novel_unshared": (4,)}
    names = {c["id"]: c["name"] for c in METHODS_CATEGORIES}
    groups = mod.word_groups(METHODS_CATEGORIES)
    assert sorted(names[i] for i in groups["novel_unshared"]) == ["bolt", "kite", "octagon", "pentagon"]
