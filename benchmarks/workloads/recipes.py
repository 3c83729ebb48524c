"""The OV-COCO and OV-LVIS recipes as command lines, in the order a user runs them (GETTING_STARTED.md lists
the same commands): prepare splits → text embeddings → proposal network → top-300 proposals of every
training image → region embeddings (torchrun) → ViLD → evaluation → demo.

`recipe(dataset, backend)` gives the real recipe; `rehearsal=True` the same commands with the overrides that
let it run on a CPU without downloads (random ViT-B-32 teacher and R50 student, one prompt template, one
iteration per training at batch 1 and the configs' image sizes), as tests/recipes and
benchmarks/recipe_rehearsal.py run it. Paths are relative to the working directory (outputs under
output/<dataset>/) and to $DISTILL_DATASETS, as in the configs.

`fvlm_recipe(dataset, backend, variant=...)` gives F-VLM / F-ViT (fvlm_r50, fvlm_r50x64, fvit_b16): prepare → text
embeddings of the teacher whose frozen tower is the backbone → training → evaluation → demo, with no proposal or
region stage; its rehearsal draws that teacher with random weights.

`baron_recipe(dataset, backend)` gives BARON: prepare → text embeddings of the ViT-B-32 teacher (ViLD's files) →
training with the teacher's image tower online → evaluation → demo, with no proposal or region stage; its
rehearsal takes ViLD's overrides (random teacher and R50).

`clipself_recipe(dataset, backend)` gives F-ViT with a CLIPSelf teacher: prepare → CLIPSelf on COCO train2017 from
ViT-B-16 / openai (torchrun; the same run for both datasets) → text embeddings of that teacher → F-ViT training
(configs/<dataset>/fvit_b16_clipself.yaml) → evaluation → demo; its rehearsal runs CLIPSelf one step at 1024 px from
random weights, and every later stage loads the tower from the file that step wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATASETS = ("ov_coco", "ov_lvis")


@dataclass(frozen=True)
class Stage:
    """One command: `tool` under tools/, run with python (or torchrun), and the paths it writes."""

    name: str
    tool: str
    args: list[str]
    outputs: list[str] = field(default_factory=list)
    torchrun: bool = False
    per: str = "image"  # the unit of the stage's cost: image, class or iteration


@dataclass(frozen=True)
class Paths:
    config_dir: str
    prepare: str
    vocabulary: str
    train_json: str
    train_images: str
    train_name: str
    val_images: str
    fmt: str
    demo_vocabulary: str


def dataset_paths(dataset: str, datasets_root: str = "$DISTILL_DATASETS") -> Paths:
    d = datasets_root
    if dataset == "ov_coco":
        return Paths(
            "configs/ov_coco",
            "prepare_ov_coco.py",
            f"{d}/coco/annotations/ov_coco/instances_val2017_ov.json",
            f"{d}/coco/annotations/ov_coco/instances_train2017_base.json",
            f"{d}/coco/train2017",
            "distill_ov_coco_train",
            f"{d}/coco/val2017",
            "coco",
            "coco",
        )
    if dataset == "ov_lvis":
        return Paths(
            "configs/ov_lvis",
            "prepare_ov_lvis.py",
            f"{d}/lvis/ov_lvis/lvis_v1_val_ov.json",
            f"{d}/lvis/ov_lvis/lvis_v1_train_norare.json",
            f"{d}/coco",
            "distill_ov_lvis_train",
            f"{d}/coco/val2017",
            "lvis",
            "lvis",
        )
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


@dataclass(frozen=True)
class Rehearsal:
    """What a CPU rehearsal changes; every stage still runs at the configs' image sizes."""

    iterations: int = 1
    regions_per_image: int = 300
    demo_image: str = ""  # default: COCO val2017's first image
    templates: str = "simple"


def _text_stage(
    dataset: str,
    p: Paths,
    teacher: str,
    tag: str,
    rehearsal: Rehearsal | None,
    weights: str | None = None,
) -> tuple[Stage, list[str]]:
    """The text-embedding stage of `teacher` (files tagged `tag`), and the `--pretrained` flag pair it used:
    `weights` (a file a recipe's earlier stage writes, rehearsal or not), else openai (none in a rehearsal)."""
    out = f"output/{dataset}"
    text_all, text_base = f"{out}/text/{dataset}_all_{tag}.npy", f"{out}/text/{dataset}_base_{tag}.npy"
    pretrained = ["--pretrained", weights or ("none" if rehearsal else "openai")]
    templates = ["--templates", rehearsal.templates if rehearsal else "vild"]
    stage = Stage(
        "text",
        "dump_text_embeddings.py",
        [
            "--teacher",
            teacher,
            *pretrained,
            *templates,
            "--vocabulary",
            p.vocabulary,
            "--output",
            text_all,
            "--base-output",
            text_base,
        ],
        [text_all, text_base],
        per="class",
    )
    return stage, pretrained


def _rehearsal_opts(
    rehearsal: Rehearsal | None, base_lr: str, model_opts: list[str], random_teacher: bool = True
) -> tuple[list[str], list[str], list[str]]:
    """(model, evaluation, training) overrides of a rehearsal: random teacher (unless `random_teacher` is False:
    the config's own teacher file, which the rehearsal made), one template, no loader workers,
    `rehearsal.iterations` at batch 1 with `base_lr`; three empty lists for the real recipe."""
    if not rehearsal:
        return [], [], []
    teacher = ["MODEL.DISTILL.TEACHER.PRETRAINED", "none"] if random_teacher else []
    model_opts = [*model_opts, *teacher, "MODEL.DISTILL.TEACHER.TEMPLATES", rehearsal.templates]
    # no loader workers for training or evaluation (detectron2's test loader also reads NUM_WORKERS: the
    # configs' 8 forked workers for one image cost more than they decode)
    eval_opts = [*model_opts, "DATALOADER.NUM_WORKERS", "0"]
    train_opts = [
        *eval_opts,
        "SOLVER.IMS_PER_BATCH",
        "1",
        "SOLVER.BASE_LR",
        base_lr,
        "SOLVER.MAX_ITER",
        str(rehearsal.iterations),
    ]
    return model_opts, eval_opts, train_opts


def _launch(backend: str, gpus: int, rehearsal: Rehearsal | None) -> tuple[list[str], list[str]]:
    """The `--backend` flags of every training / inference tool, and the `--num-gpus` flags of training and
    evaluation (one process per GPU; none in a rehearsal)."""
    return ["--backend", backend], [] if rehearsal else ["--num-gpus", str(gpus)]


def _prepare_stage(p: Paths, datasets_root: str) -> Stage:
    return Stage("prepare", p.prepare, ["--datasets-root", datasets_root], [], per="image")


def _train_stage(
    name: str, cfg: str, out_dir: str, b: list[str], multi: list[str], train_opts: list[str]
) -> Stage:
    """train_net of `cfg` into `out_dir` (the config's OUTPUT_DIR), without evaluation."""
    return Stage(
        name,
        "train_net.py",
        [*b, *multi, "--config-file", cfg, *train_opts, "DATASETS.TEST", "()"],
        [out_dir],
        per="iteration",
    )


def _evaluate_and_demo(
    p: Paths,
    cfg: str,
    weights: str,
    eval_dir: str,
    demo_dir: str,
    b: list[str],
    multi: list[str],
    eval_opts: list[str],
    model_opts: list[str],
    rehearsal: Rehearsal | None,
) -> list[Stage]:
    """train_net --eval-only of `weights` into `eval_dir`, and the demo of one validation image into `demo_dir`."""
    demo_input = (
        rehearsal.demo_image if rehearsal and rehearsal.demo_image else f"{p.val_images}/000000000139.jpg"
    )
    return [
        Stage(
            "evaluate",
            "train_net.py",
            [
                *b,
                *multi,
                "--eval-only",
                "--config-file",
                cfg,
                "MODEL.WEIGHTS",
                weights,
                "OUTPUT_DIR",
                eval_dir,
                *eval_opts,
            ],
            [eval_dir],
        ),
        Stage(
            "demo",
            "demo.py",
            [
                *b,
                "--config-file",
                cfg,
                "--weights",
                weights,
                "--vocabulary",
                p.demo_vocabulary,
                "--input",
                demo_input,
                "--output",
                demo_dir,
                *model_opts,
            ],
            [demo_dir],
        ),
    ]


def recipe(
    dataset: str,
    backend: str = "auto",
    datasets_root: str = "$DISTILL_DATASETS",
    rehearsal: Rehearsal | None = None,
    teacher: str = "ViT-B-32",
    tag: str = "vitb32",
    gpus: int = 8,
) -> list[Stage]:
    """The recipe's commands. `backend` is passed to every training / inference tool."""
    p = dataset_paths(dataset, datasets_root)
    out = f"output/{dataset}"
    proposals, store = f"{out}/proposals_train_{tag}.npz", f"{out}/regions_{tag}"
    rpn_cfg, vild_cfg = f"{p.config_dir}/vild_text_r50_fpn_lsj.yaml", f"{p.config_dir}/vild_r50_fpn_lsj.yaml"
    text, pretrained = _text_stage(dataset, p, teacher, tag, rehearsal)
    regions_opts = ["--max-per-image", str(rehearsal.regions_per_image if rehearsal else 300)]
    # rehearsal: random R50 (no download), batch 1 with the learning rate scaled linearly from 64
    model_opts, eval_opts, train_opts = _rehearsal_opts(rehearsal, "0.00125", ["MODEL.BACKBONE.WEIGHTS", ""])
    b, multi = _launch(backend, gpus, rehearsal)
    return [
        _prepare_stage(p, datasets_root),
        text,
        _train_stage("train_proposal_net", rpn_cfg, f"{out}/vild_text", b, multi, train_opts),
        Stage(
            "proposals",
            "export_proposals.py",
            [
                *b,
                "--config-file",
                rpn_cfg,
                "--weights",
                f"{out}/vild_text/model_final.pth",
                "--dataset",
                p.train_name,
                "--output",
                proposals,
                "--top-k",
                "300",
                *model_opts,
            ],
            [proposals],
        ),
        Stage(
            "regions",
            "dump_region_embeddings.py",
            [
                "--teacher",
                teacher,
                *pretrained,
                "--format",
                p.fmt,
                "--dataset-json",
                p.train_json,
                "--image-root",
                p.train_images,
                "--proposals",
                proposals,
                "--output",
                store,
                *regions_opts,
            ],
            [store],
            torchrun=True,
        ),
        _train_stage("train_vild", vild_cfg, f"{out}/vild", b, multi, train_opts),
        *_evaluate_and_demo(
            p,
            vild_cfg,
            f"{out}/vild/model_final.pth",
            f"{out}/vild_eval",
            f"{out}/demo",
            b,
            multi,
            eval_opts,
            model_opts,
            rehearsal,
        ),
    ]


@dataclass(frozen=True)
class FrozenVariant:
    """An F-VLM / F-ViT recipe: its teacher (the frozen backbone), the text files' tag, and the learning rate of
    a rehearsal at batch 1."""

    teacher: str
    tag: str
    rehearsal_lr: str


# rehearsal at batch 1: F-VLM's SGD rate 0.09 at batch 64 scaled linearly; F-ViT's AdamW rate 1e-4 kept as it is
FROZEN_VARIANTS = {
    "fvlm_r50": FrozenVariant("RN50", "rn50", "0.00140625"),
    "fvlm_r50x64": FrozenVariant("RN50x64", "rn50x64", "0.00140625"),
    "fvit_b16": FrozenVariant("ViT-B-16", "vitb16", "0.0001"),
}


def fvlm_recipe(
    dataset: str,
    backend: str = "auto",
    datasets_root: str = "$DISTILL_DATASETS",
    rehearsal: Rehearsal | None = None,
    variant: str = "fvlm_r50",
    gpus: int = 8,
) -> list[Stage]:
    """F-VLM / F-ViT (`variant`, a key of FROZEN_VARIANTS; its config is configs/<dataset>/<variant>.yaml):
    prepare → text embeddings of the backbone's teacher → training → evaluation → demo. No proposal network and
    no region store: the teacher's frozen tower is the backbone and scores the regions itself."""
    if variant not in FROZEN_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(FROZEN_VARIANTS)}, got {variant!r}")
    v = FROZEN_VARIANTS[variant]
    p = dataset_paths(dataset, datasets_root)
    out, cfg = f"output/{dataset}", f"{p.config_dir}/{variant}.yaml"
    text, _ = _text_stage(dataset, p, v.teacher, v.tag, rehearsal)
    # rehearsal: the random tower of MODEL.DISTILL.TEACHER (MODEL.BACKBONE.WEIGHTS is not read by the CLIP backbone)
    opts = _rehearsal_opts(rehearsal, v.rehearsal_lr, [])
    return _one_training(p, datasets_root, text, cfg, f"{out}/{variant}", backend, gpus, opts, rehearsal)


def baron_recipe(
    dataset: str,
    backend: str = "auto",
    datasets_root: str = "$DISTILL_DATASETS",
    rehearsal: Rehearsal | None = None,
    gpus: int = 8,
) -> list[Stage]:
    """BARON (configs/<dataset>/baron_r50_fpn_lsj.yaml): prepare → text embeddings of the ViT-B-32 teacher (the
    same files as ViLD's) → training → evaluation → demo. No proposal network and no region store: the teacher's
    image tower crops the bags online during training."""
    p = dataset_paths(dataset, datasets_root)
    cfg = f"{p.config_dir}/baron_r50_fpn_lsj.yaml"
    text, _ = _text_stage(dataset, p, "ViT-B-32", "vitb32", rehearsal)
    # rehearsal: as ViLD's (random R50, batch 1 at the configs' rate 0.08 of batch 64 scaled linearly)
    opts = _rehearsal_opts(rehearsal, "0.00125", ["MODEL.BACKBONE.WEIGHTS", ""])
    out = f"output/{dataset}/baron"
    return _one_training(p, datasets_root, text, cfg, out, backend, gpus, opts, rehearsal)


CLIPSELF_DIR = "output/clipself_vitb16"
CLIPSELF_TEACHER = f"{CLIPSELF_DIR}/teacher_fp16.safetensors"  # train_clipself's file (teacher_<save dtype>)
COCO_TRAIN2017_IMAGES = 118_287


def clipself_steps(
    gpus: int = 8, batch: int = 2, epochs: int = 6, images: int = COCO_TRAIN2017_IMAGES
) -> int:
    """CLIPSelf's schedule in steps: `epochs` x ceil(`images` / (`batch` per process x `gpus`)); fewer GPUs keep
    the epochs (more steps). 6 epochs of COCO train2017 at 2 x 8: 44,358."""
    return epochs * -(-images // (batch * gpus))


def _clipself_stage(datasets_root: str, rehearsal: Rehearsal | None, gpus: int) -> Stage:
    """CLIPSelf on COCO train2017 from ViT-B-16 / openai with its B/16 settings (1024 px, grids of m <= 6 rows
    and <= 20 cells, AdamW 1e-5 / 0.1, warm-up 1,000 then cosine, 2 images per process, 6 epochs, student
    ratio 0.7) into CLIPSELF_DIR; a rehearsal: random weights, one step of one image at the same size."""
    coco = dataset_paths("ov_coco", datasets_root)
    pretrained, steps, batch = ("none", 1, 1) if rehearsal else ("openai", clipself_steps(gpus), 2)
    return Stage(
        "clipself",
        "train_clipself.py",
        [
            "--images",
            coco.train_images,
            "--arch",
            "ViT-B-16",
            "--pretrained",
            pretrained,
            "--image-size",
            "1024",
            "--max-split",
            "6",
            "--max-cells",
            "20",
            "--lr",
            "1e-5",
            "--weight-decay",
            "0.1",
            "--warmup",
            "1000",
            "--student-ratio",
            "0.7",
            "--batch-size",
            str(batch),
            "--steps",
            str(steps),
            "--output-dir",
            CLIPSELF_DIR,
        ],
        [CLIPSELF_TEACHER],
        torchrun=True,
        per="iteration",
    )


def clipself_recipe(
    dataset: str,
    backend: str = "auto",
    datasets_root: str = "$DISTILL_DATASETS",
    rehearsal: Rehearsal | None = None,
    gpus: int = 8,
) -> list[Stage]:
    """F-ViT with the CLIPSelf teacher (configs/<dataset>/fvit_b16_clipself.yaml): prepare → CLIPSelf on COCO
    train2017 (the same run, and file, for both datasets) → text embeddings of that teacher (its text tower is
    openai's, but the files name the teacher the config checks them against) → training → evaluation → demo."""
    p = dataset_paths(dataset, datasets_root)
    cfg = f"{p.config_dir}/fvit_b16_clipself.yaml"
    text, _ = _text_stage(dataset, p, "ViT-B-16", "vitb16_clipself", rehearsal, weights=CLIPSELF_TEACHER)
    # rehearsal: F-ViT's (AdamW 1e-4 at batch 1) with the config's teacher, the file the CLIPSelf stage wrote
    opts = _rehearsal_opts(rehearsal, FROZEN_VARIANTS["fvit_b16"].rehearsal_lr, [], random_teacher=False)
    out = f"output/{dataset}/fvit_b16_clipself"
    prepare, *rest = _one_training(p, datasets_root, text, cfg, out, backend, gpus, opts, rehearsal)
    return [prepare, _clipself_stage(datasets_root, rehearsal, gpus), *rest]


def _one_training(
    p: Paths,
    datasets_root: str,
    text: Stage,
    cfg: str,
    run_dir: str,
    backend: str,
    gpus: int,
    opts: tuple[list[str], list[str], list[str]],
    rehearsal: Rehearsal | None,
) -> list[Stage]:
    """prepare → `text` → training of `cfg` into `run_dir` → its evaluation (`run_dir`_eval) → demo
    (`run_dir`_demo). `opts`: the (model, evaluation, training) overrides of `_rehearsal_opts`."""
    model_opts, eval_opts, train_opts = opts
    b, multi = _launch(backend, gpus, rehearsal)
    return [
        _prepare_stage(p, datasets_root),
        text,
        _train_stage("train", cfg, run_dir, b, multi, train_opts),
        *_evaluate_and_demo(
            p,
            cfg,
            f"{run_dir}/model_final.pth",
            f"{run_dir}_eval",
            f"{run_dir}_demo",
            b,
            multi,
            eval_opts,
            model_opts,
            rehearsal,
        ),
    ]


def command_line(stage: Stage, gpus: int = 8) -> str:
    """The stage as a shell line (torchrun with one rank per GPU for the region dump)."""
    import shlex

    launcher = f"torchrun --nproc-per-node {gpus}" if stage.torchrun else "python"
    return " ".join(
        [
            launcher,
            f"tools/{stage.tool}",
            *(a if a.startswith("$") or "/$" in a else shlex.quote(a) for a in stage.args),
        ]
    )


@dataclass
class StageRun:
    returncode: int
    seconds: float
    peak_rss_bytes: int  # of the stage's process tree (the largest process)
    bytes_written: int
    stderr: str


def run_stage(
    stage: Stage, repo: str, cwd: str, datasets_root: str, env: dict | None = None, nproc: int = 1
) -> StageRun:
    """Run one stage as a subprocess in `cwd` with DISTILL_DATASETS set; time, peak memory, output size."""
    import os
    import subprocess
    import sys
    import time

    env = {**(env or os.environ), "DISTILL_DATASETS": datasets_root}
    args = [a.replace("$DISTILL_DATASETS", datasets_root) for a in stage.args]
    tool = os.path.join(repo, "tools", stage.tool)
    cmd = (
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), tool, *args]
        if stage.torchrun
        else [sys.executable, tool, *args]
    )
    t0 = time.perf_counter()
    with open(os.path.join(cwd, f"stage_{stage.name}.log"), "w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        log.seek(0)
        text = log.read()
    size = sum(_size(os.path.join(cwd, o)) for o in stage.outputs)
    return StageRun(proc.returncode, seconds, usage.ru_maxrss * 1024, size, text[-4000:])


def _size(path: str) -> int:
    import os

    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
