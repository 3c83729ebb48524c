"""The quickstart pipeline: the whole open-vocabulary pipeline on the synthetic benchmark, stage by stage,
on either backend (`tools/quickstart.py` is its command line; the benchmarks reuse its stages).

Stages (each cached under the output folder; a rerun skips finished ones):
  data       the synthetic benchmark (base boxes only in training)
  text       class embeddings of the base and of all classes from the shipped tiny teacher
  proposals  a ViLD-text detector trained on base classes; its RPN's proposals on the training images
  regions    the teacher's region embeddings of those proposals (crops at 1x and 1.5x)
  vild       the ViLD detector (ViLD-text + ViLD-image), fine-tuned from the ViLD-text detector
  eval       box and mask AP for base, novel and all classes, for ViLD-text and ViLD
  demo       a picture of ViLD's detections on validation images, novel classes named
  semseg     an open-vocabulary semantic segmenter on the ViLD student's backbone (torchvision backend)
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

from .. import teacher as _teacher  # its names load on first use: --help without torch
from ..data import synthetic_dataset
from ..data.synthetic import SyntheticConfig, generate
from ..model_zoo import get_config_file
from ..utils import DistillInputError, atomic_write_bytes, atomic_write_json, cli_entry, dumps_json, read_json
from ..utils.cli import ToolParser, parse_args, positive_int
from ..utils.errors import TrainingInterrupted
from ..utils.outdir import LOCK_NAME, lock_output_dir
from .backend import BACKENDS, Backend, check_config_early, dataset_proposals, get_backend

QUICKSTART_DATA = SyntheticConfig(seed=0, num_train=500, num_val=100, image_size=128)
TEACHER = "synthetic-tiny-teacher"
CONFIG = "synthetic/vild_r18_fpn_quick.yaml"  # shipped with the package (distill.model_zoo.get_config_file)
PROPOSALS_PER_IMAGE = 32
# Iterations of the two trainings (the config's SOLVER.MAX_ITER is the from-scratch schedule of
# benchmarks/ablation.py): the proposal network (= the ViLD-text row), then ViLD fine-tuned from it.
PROPOSAL_NET_ITERS = 400
VILD_ITERS = 500
STAGES = ("data", "text", "proposals", "regions", "vild", "eval", "demo", "semseg")
SEMSEG_ROW = "CE + pixel distillation"


class Pipeline:
    def __init__(
        self,
        out: Path,
        overrides: list[str],
        progress: bool = True,
        teacher: str = TEACHER,
        teacher_weights: str | None = None,
        backend: str = "torchvision",
        iters: tuple[int, int] = (PROPOSAL_NET_ITERS, VILD_ITERS),
        semseg_iters: int | None = None,
        config_file: str | None = None,
        region_dtype: str = "int8",
    ):
        self.region_dtype = region_dtype  # the region store's embeddings (int8 rows + scale, or float16)
        self.out, self.overrides, self.progress, self.iters = Path(out), overrides, progress, iters
        self.teacher_spec = (teacher, teacher_weights)
        self.text_dir, self.regions = self.out / "text", self.out / "regions"
        self.backend_name = backend
        self.semseg_iters = semseg_iters  # None: the segmenter config's SOLVER.MAX_ITER
        self.config_file = config_file or get_config_file(CONFIG)

    @functools.cached_property
    def backend(self) -> Backend:
        return get_backend(self.backend_name)  # on first use: a folder of another backend is the first error

    def teacher_opts(self) -> list[str]:
        """MODEL.DISTILL.TEACHER of another --teacher: the config names the teacher its embeddings came from."""
        if self.teacher_spec == (TEACHER, None):
            return []
        return [
            "MODEL.DISTILL.TEACHER.ARCH",
            self.teacher_spec[0],
            "MODEL.DISTILL.TEACHER.PRETRAINED",
            self.teacher_spec[1] or "",
        ]

    def cfg(self, output: str, extra: list[str] = ()):
        opts = [
            "DATASETS.ROOT",
            str(self.out),
            "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
            str(self.text_dir / "synthetic_base.npy"),
            "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
            str(self.text_dir / "synthetic_all.npy"),
            "MODEL.DISTILL.VILD.REGION_STORE",
            str(self.regions),
            "OUTPUT_DIR",
            str(self.out / output),
            *self.teacher_opts(),
            *extra,
            *self.overrides,
        ]
        return self.backend.load_config(self.config_file, opts)

    def data(self) -> dict:
        root = generate(self.out / "synthetic", QUICKSTART_DATA, progress=self.progress)
        self.backend.register_datasets(self.out)  # out/synthetic as distill_synthetic_{train,val}
        return {"root": str(root), "backend": self.backend.name, "iters": list(self.iters)}

    def text(
        self, teacher_spec: tuple | None = None, text_dir: Path | None = None, templates: str = "vild"
    ) -> dict:
        """The class embeddings of the world's vocabulary by `teacher_spec` (default the pipeline's teacher)
        with `templates` (a template set or a learned-prompt file), into `text_dir` (default the pipeline's
        text folder)."""
        text_dir = self.text_dir if text_dir is None else Path(text_dir)
        _, meta = synthetic_dataset(self.out / "synthetic", "val")
        teacher = _teacher.create_teacher(*(teacher_spec or self.teacher_spec))
        emb = teacher.encode_text(meta.thing_classes, templates)
        prov = {**teacher.provenance(), "templates": templates, "vocabulary": "synthetic"}
        base = meta.contiguous_ids("base")
        _teacher.ClassEmbeddings(emb, meta.thing_classes, prov).save(text_dir / "synthetic_all.npy")
        _teacher.ClassEmbeddings(emb[base], [meta.thing_classes[i] for i in base], prov).save(
            text_dir / "synthetic_base.npy"
        )
        return {"classes": len(meta.thing_classes), "base": len(base), "dim": int(emb.shape[1])}

    def _train(self, output: str, extra: list[str], init: str = "") -> str:
        cfg = self.cfg(output, extra + (["MODEL.WEIGHTS", init] if init else []))
        final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
        if not final.is_file():
            self.backend.train(cfg, self.progress)
        return str(final)

    def proposals(self) -> dict:
        text_only = ["MODEL.DISTILL.METHOD", "vild_text", "SOLVER.MAX_ITER", str(self.iters[0])]
        weights = self._train("vild_text", text_only)
        cfg = self.cfg("vild_text", text_only)
        model = self.backend.load_model(cfg, weights)
        dicts, _ = synthetic_dataset(self.out / "synthetic", "train")
        props = dataset_proposals(
            self.backend,
            model,
            dicts,
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
            PROPOSALS_PER_IMAGE,
            self.progress,
        )
        atomic_write_json(self.out / "proposals_train.json", props)
        return {"weights": weights, "proposals": len(props)}

    def regions_stage(self) -> dict:
        dicts, _ = synthetic_dataset(self.out / "synthetic", "train")
        from ..teacher.regions import dump_region_embeddings, load_proposals  # torch: not for --help

        props = load_proposals(
            self.out / "proposals_train.json", [d["image_id"] for d in dicts], PROPOSALS_PER_IMAGE
        )
        writer = dump_region_embeddings(
            _teacher.create_teacher(*self.teacher_spec),
            dicts,
            props,
            self.regions,
            chunk_size=50,
            progress=self.progress,
            dtype=self.region_dtype,
        )
        index = writer.finalize()
        return {k: index[k] for k in ("num_images", "num_regions", "skipped_boxes")} | {
            "dtype": self.region_dtype
        }

    def vild(self) -> dict:
        init = str(self.out / "vild_text" / "model_final.pth")
        return {"weights": self._train("vild", ["SOLVER.MAX_ITER", str(self.iters[1])], init)}

    def eval(self) -> dict:
        results = {}
        for name in ("vild_text", "vild"):
            cfg = self.cfg(name)
            model = self.backend.load_model(cfg, str(self.out / name / "model_final.pth"))
            import torch

            with torch.no_grad():
                results[name] = self.backend.evaluate(cfg, model, "distill_synthetic_val")
        return results

    def demo(self) -> dict:
        path = draw_predictions_grid(
            self.backend,
            self.cfg("vild"),
            str(self.out / "vild" / "model_final.pth"),
            self.out / "synthetic",
            self.out / "detections.png",
        )
        return {"picture": str(path)}

    def semseg(self) -> dict:
        from .torchvision.sem_seg import load_semseg_config, train_and_evaluate_segmenter

        if self.backend.name != "torchvision":
            return {"skipped": f"the segmenter trains on the torchvision backend, not {self.backend.name}"}
        cfg = load_semseg_config(
            [
                *semseg_inputs(self.out),
                "OUTPUT_DIR",
                str(self.out / "semseg"),
                *self.teacher_opts(),
                *self.overrides,
            ]
        )
        result = train_and_evaluate_segmenter(
            self.out / "synthetic",
            self.out / "semseg",
            _teacher.create_teacher(*self.teacher_spec),
            cfg,
            variants={SEMSEG_ROW: None},
            max_iter=self.semseg_iters,
            progress=self.progress,
            resume=True,
        )
        return {"mIoU": result["rows"][SEMSEG_ROW], "max_iter": result["max_iter"]}


def draw_predictions_grid(
    backend: Backend, cfg, weights: str, bench_root: str | Path, out_png: str | Path, n: int = 6
) -> Path:
    """The demo stage's picture: detections of the test vocabulary on the first `n` validation images that
    hold a novel object, side by side, novel classes named (the backend's load_for_inference and predict)."""
    import cv2
    import numpy as np
    import torch

    from ..data.images import read_image_rgb
    from ..teacher.checks import load_class_embeddings
    from .drawing import render

    dicts, meta = synthetic_dataset(bench_root, "val")
    vocab = load_class_embeddings(
        cfg.MODEL.DISTILL.TEST_CLASS_EMBEDDINGS,
        cfg,
        "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
        expected_names=meta.thing_classes,
    )
    novel = torch.zeros(len(meta.thing_classes), dtype=torch.bool)
    novel[meta.contiguous_ids("novel")] = True
    model = backend.load_for_inference(cfg, weights, vocab, novel)
    picks = [d for d in dicts if any(novel[a["category_id"]] for a in d["annotations"])][:n]
    tiles = []
    for d in picks:
        rgb = read_image_rgb(d["file_name"]).permute(1, 2, 0).numpy()
        tiles.append(
            render(
                np.ascontiguousarray(rgb), backend.predict(model, cfg, d), meta.thing_classes, novel.tolist()
            )
        )
    grid = np.concatenate(tiles, 1) if tiles else np.zeros((8, 8, 3), np.uint8)
    ok, buf = cv2.imencode(".png", grid[:, :, ::-1])
    atomic_write_bytes(out_png, buf.tobytes())
    return Path(out_png)


def semseg_inputs(out: Path) -> list[str]:
    """Segmenter config overrides for the student, proposals and region store of the quickstart run in `out`."""
    return [
        "MODEL.WEIGHTS",
        str(out / "vild" / "model_final.pth"),
        "MODEL.DISTILL.SEM_SEG.PROPOSALS",
        str(out / "proposals_train.json"),
        "MODEL.DISTILL.SEM_SEG.REGION_STORE",
        str(out / "regions"),
    ]


def print_table(ev: dict) -> dict:
    rows = [("ViLD-text", ev["vild_text"]), ("ViLD", ev["vild"])]
    keys = [
        ("AP50_novel", "AP50 novel"),
        ("AP50_base", "AP50 base"),
        ("AP50", "AP50 all"),
        ("AP_novel", "AP novel"),
        ("AP_base", "AP base"),
        ("AP", "AP all"),
    ]
    print("\n| model | task | " + " | ".join(k[1] for k in keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for name, m in rows:
        for task in ("box", "mask"):
            cells = " | ".join(
                "-" if m.get(f"{task}_{k}") is None else f"{m[f'{task}_{k}']:.1f}" for k, _ in keys
            )
            print(f"| {name} | {task} | {cells} |")
    vild = ev["vild"]
    return {
        f"{t}_{k}": vild.get(f"{t}_{k}")
        for t in ("box", "mask")
        for k in ("AP50_novel", "AP50_base", "AP50", "AP_novel", "AP_base", "AP")
    } | {"vild_text_box_AP50_novel": ev["vild_text"].get("box_AP50_novel")}


def run(pipe: Pipeline, skip_semseg: bool = False) -> dict:
    """Runs the stages not yet done in pipe.out (stages.json), prints the tables and the JSON line; returns it."""
    out = pipe.out
    done_file = out / "stages.json"
    done = read_json(done_file) if done_file.is_file() else {}
    ran = done.get("data", {}).get("backend", pipe.backend_name if not done else "torchvision")
    if ran != pipe.backend_name:
        raise DistillInputError(
            f"{out} holds a quickstart run of the {ran} backend; use another --output-dir or --force"
        )
    was = done.get("data", {}).get("iters")
    if was and "proposals" in done and list(was) != list(pipe.iters):
        raise DistillInputError(
            f"{out} holds stages trained with --proposal-iters {was[0]} --vild-iters {was[1]}; "
            "use the same, another --output-dir, or --force"
        )
    stored = done.get("regions", {}).get("dtype")
    if stored and stored != pipe.region_dtype:
        raise DistillInputError(
            f"{out} holds a {stored} region store; use --region-dtype {stored}, another --output-dir, or --force"
        )
    t0 = time.time()
    for name in STAGES:
        if name == "semseg" and skip_semseg:
            continue
        if name in done and name != "data":
            print(f"[quickstart] stage {name}: cached", flush=True)
            continue
        t = time.time()
        result = getattr(pipe, "regions_stage" if name == "regions" else name)()
        done[name] = {**result, "seconds": round(time.time() - t, 1)}
        atomic_write_json(done_file, done, indent=1)
        print(f"[quickstart] stage {name}: done in {time.time() - t:.1f}s", flush=True)
    print(
        f"\nViLD-text: the proposal network ({pipe.iters[0]} iterations, base classes); ViLD: fine-tuned from it "
        f"({pipe.iters[1]} iterations). benchmarks/ablation.py compares the variants on one schedule."
    )
    summary = print_table(done["eval"])
    seg = done.get("semseg", {}).get("mIoU")
    if seg:
        from ..evaluation import format_sem_seg_table

        print(
            f"\nsemantic segmentation ({done['semseg']['max_iter']} iterations on the ViLD student's backbone):\n"
        )
        print(format_sem_seg_table({SEMSEG_ROW: seg}))
        summary |= {f"semseg_{k}": seg.get(k) for k in ("mIoU_novel", "mIoU_base", "hIoU", "mIoU", "pACC")}
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["stage_seconds"] = {k: v["seconds"] for k, v in done.items()}
    print(f"\npicture of detections: {done['demo']['picture']}")
    print(json.dumps(json.loads(dumps_json(summary))))
    return summary


@cli_entry
def main(argv=None) -> int:
    p = ToolParser(
        description="The whole open-vocabulary pipeline on the synthetic benchmark, "
        "stage by stage (distill.integrations.quickstart)."
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="default: output/quickstart (torchvision), output/quickstart_detectron2 (detectron2)",
    )
    p.add_argument("--force", action="store_true", help="rerun every stage from scratch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--config-file",
        default=None,
        help="detector config (default: the shipped configs/synthetic/vild_r18_fpn_quick.yaml)",
    )
    p.add_argument("--teacher", default=TEACHER, help="model-zoo teacher or open_clip arch")
    p.add_argument("--teacher-weights", default=None, help="checkpoint for --teacher given as an arch")
    p.add_argument(
        "--proposal-iters",
        type=positive_int,
        default=PROPOSAL_NET_ITERS,
        help="iterations of the proposal network (ViLD-text on base classes)",
    )
    p.add_argument(
        "--vild-iters", type=positive_int, default=VILD_ITERS, help="iterations of ViLD, fine-tuned from it"
    )
    p.add_argument(
        "--semseg-iters",
        type=positive_int,
        default=None,
        help="iterations of the segmenter (default: its config, configs/synthetic/semseg_r18_fpn_quick.yaml)",
    )
    p.add_argument("--skip-semseg", action="store_true", help="detection only: leave out the semseg stage")
    p.add_argument(
        "--region-dtype",
        choices=("int8", "float16"),
        default="int8",
        help="region-store embeddings: int8 with a per-row scale (default) or float16",
    )
    p.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="torchvision",
        help="training / inference framework (detectron2 must be installed, see INSTALL.md)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides (flags may come before or after them)",
    )
    args = parse_args(p, argv)
    # a typo in the overrides is reported now, not after the data and text stages (and not after --force)
    check_config_early(args.config_file or get_config_file(CONFIG), args.overrides, args.backend)
    out = Path(
        args.output_dir
        or ("output/quickstart" if args.backend == "torchvision" else f"output/quickstart_{args.backend}")
    )
    lock_output_dir(out, "--output-dir")  # one quickstart at a time per folder
    if args.force:
        for p in out.iterdir():
            if p.name != LOCK_NAME:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    pipe = Pipeline(
        out,
        args.overrides,
        not args.no_progress,
        args.teacher,
        args.teacher_weights,
        args.backend,
        (args.proposal_iters, args.vild_iters),
        args.semseg_iters,
        args.config_file,
        args.region_dtype,
    )
    try:
        run(pipe, args.skip_semseg)
    except TrainingInterrupted as e:  # its stages resume when it runs again; it has no --resume
        raise e.with_hint("run the quickstart again to continue (finished stages are kept)") from None
    return 0
