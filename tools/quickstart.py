#!/usr/bin/env python
"""The main job: the whole open-vocabulary pipeline on the synthetic benchmark, on CPU, stage by stage.

    python tools/quickstart.py [--output-dir output/quickstart] [--force] [KEY VALUE ...]

Stages (each cached under the output folder; a rerun skips finished ones):
  data       the synthetic benchmark (base boxes only in training)
  text       class embeddings of the base and of all classes from the shipped tiny teacher
  proposals  a ViLD-text detector trained on base classes; its RPN's proposals on the training images
  regions    the teacher's region embeddings of those proposals (crops at 1x and 1.5x)
  vild       the ViLD detector (ViLD-text + ViLD-image), fine-tuned from the ViLD-text detector
  eval       box and mask AP for base, novel and all classes, for ViLD-text and ViLD
  demo       a picture of ViLD's detections on validation images, novel classes named
Ends with the table and one line of JSON (box_AP50_novel, ...). KEY VALUE pairs override the config.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)

from distill.data.synthetic import SyntheticConfig, generate
from distill.utils import atomic_write_json, cli_entry, dumps_json, read_json

QUICKSTART_DATA = SyntheticConfig(seed=0, num_train=500, num_val=100, image_size=128)
TEACHER = "synthetic-tiny-teacher"
CONFIG = str(Path(__file__).resolve().parents[1] / "configs/synthetic/vild_r18_fpn_quick.yaml")
PROPOSALS_PER_IMAGE = 32


class Pipeline:
    def __init__(self, out: Path, overrides: list[str], progress: bool = True, teacher: str = TEACHER,
                 teacher_weights: str | None = None):
        self.out, self.overrides, self.progress = out, overrides, progress
        self.teacher_spec = (teacher, teacher_weights)
        self.text_dir, self.regions = out / "text", out / "regions"

    def cfg(self, output: str, extra: list[str] = ()):
        from distill.config import load_config

        opts = ["MODEL.DISTILL.DATASETS_ROOT", str(self.out), "MODEL.DISTILL.TRAIN_CLASS_EMBEDDINGS",
                str(self.text_dir / "synthetic_base.npy"), "MODEL.DISTILL.TEST_CLASS_EMBEDDINGS",
                str(self.text_dir / "synthetic_all.npy"), "MODEL.DISTILL.REGION_STORE", str(self.regions),
                "OUTPUT_DIR", str(self.out / output), *extra, *self.overrides]
        return load_config(CONFIG, opts)

    def data(self) -> dict:
        from distill.data.catalog import register_synthetic

        root = generate(self.out / "synthetic", QUICKSTART_DATA, progress=self.progress)
        register_synthetic(root)
        return {"root": str(root)}

    def text(self) -> dict:
        from distill.data import synthetic_dataset
        from distill.teacher import ClassEmbeddings, create_teacher

        _, meta = synthetic_dataset(self.out / "synthetic", "val")
        teacher = create_teacher(*self.teacher_spec)
        emb = teacher.encode_text(meta.thing_classes, "vild")
        prov = {**teacher.provenance(), "templates": "vild", "vocabulary": "synthetic"}
        base = meta.contiguous_ids("base")
        ClassEmbeddings(emb, meta.thing_classes, prov).save(self.text_dir / "synthetic_all.npy")
        ClassEmbeddings(emb[base], [meta.thing_classes[i] for i in base], prov).save(
            self.text_dir / "synthetic_base.npy")
        return {"classes": len(meta.thing_classes), "base": len(base), "dim": int(emb.shape[1])}

    def _train(self, output: str, extra: list[str], init: str = "") -> str:
        from distill.integrations.torchvision.trainer import train

        cfg = self.cfg(output, extra + (["MODEL.WEIGHTS", init] if init else []))
        final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
        if not final.is_file():
            train(cfg, resume=True, progress=self.progress)
        return str(final)

    def proposals(self) -> dict:
        from distill.data import synthetic_dataset
        from distill.integrations.torchvision.proposals import dataset_proposals
        from distill.integrations.torchvision.trainer import AtomicCheckpointer, build_model_for

        weights = self._train("vild_text", ["MODEL.DISTILL.IMAGE_LOSS_WEIGHT", "0.0"])
        cfg = self.cfg("vild_text", ["MODEL.DISTILL.IMAGE_LOSS_WEIGHT", "0.0"])
        model, _ = build_model_for(cfg, "cpu")
        AtomicCheckpointer(model, save_to_disk=False).load(weights, checkpointables=[])
        dicts, _ = synthetic_dataset(self.out / "synthetic", "train")
        props = dataset_proposals(model, dicts, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                                  PROPOSALS_PER_IMAGE, self.progress)
        atomic_write_json(self.out / "proposals_train.json", props)
        return {"weights": weights, "proposals": len(props)}

    def regions_stage(self) -> dict:
        from distill.data import synthetic_dataset
        from distill.teacher import create_teacher
        from distill.teacher.regions import dump_region_embeddings, load_proposals

        dicts, _ = synthetic_dataset(self.out / "synthetic", "train")
        props = load_proposals(self.out / "proposals_train.json", [d["image_id"] for d in dicts],
                               PROPOSALS_PER_IMAGE)
        writer = dump_region_embeddings(create_teacher(*self.teacher_spec), dicts, props, self.regions, chunk_size=50,
                                        progress=self.progress)
        index = writer.finalize()
        return {k: index[k] for k in ("num_images", "num_regions", "skipped_boxes")}

    def vild(self) -> dict:
        init = str(self.out / "vild_text" / "model_final.pth")
        return {"weights": self._train("vild", ["SOLVER.MAX_ITER", str(self.cfg("vild").SOLVER.MAX_ITER // 2)],
                                       init)}

    def eval(self) -> dict:
        import torch

        from distill.integrations.torchvision.trainer import AtomicCheckpointer, build_model_for, evaluate

        results = {}
        for name in ("vild_text", "vild"):
            cfg = self.cfg(name)
            model, _ = build_model_for(cfg, "cpu")
            AtomicCheckpointer(model, save_to_disk=False).load(str(self.out / name / "model_final.pth"),
                                                              checkpointables=[])
            with torch.no_grad():
                results[name] = evaluate(cfg, model, "distill_synthetic_val")
        return results

    def demo(self) -> dict:
        from distill.integrations.torchvision.demo import draw_predictions_grid

        path = draw_predictions_grid(self.cfg("vild"), str(self.out / "vild" / "model_final.pth"),
                                     self.out / "synthetic", self.out / "detections.png")
        return {"picture": str(path)}


STAGES = ("data", "text", "proposals", "regions", "vild", "eval", "demo")


def print_table(ev: dict) -> dict:
    rows = [("ViLD-text", ev["vild_text"]), ("ViLD", ev["vild"])]
    keys = [("AP50_novel", "AP50 novel"), ("AP50_base", "AP50 base"), ("AP50", "AP50 all"),
            ("AP_novel", "AP novel"), ("AP_base", "AP base"), ("AP", "AP all")]
    print("\n| model | task | " + " | ".join(k[1] for k in keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for name, m in rows:
        for task in ("box", "mask"):
            cells = " | ".join("-" if m.get(f"{task}_{k}") is None else f"{m[f'{task}_{k}']:.1f}" for k, _ in keys)
            print(f"| {name} | {task} | {cells} |")
    vild = ev["vild"]
    return {f"{t}_{k}": vild.get(f"{t}_{k}") for t in ("box", "mask") for k in
            ("AP50_novel", "AP50_base", "AP50", "AP_novel", "AP_base", "AP")} | \
        {"vild_text_box_AP50_novel": ev["vild_text"].get("box_AP50_novel")}


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="output/quickstart")
    p.add_argument("--force", action="store_true", help="rerun every stage from scratch")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--teacher", default=TEACHER, help="model-zoo teacher or open_clip arch")
    p.add_argument("--teacher-weights", default=None, help="checkpoint for --teacher given as an arch")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(out, args.overrides, not args.no_progress, args.teacher, args.teacher_weights)
    done_file = out / "stages.json"
    done = read_json(done_file) if done_file.is_file() else {}
    t0 = time.time()
    for name in STAGES:
        if name in done and name != "data":
            print(f"[quickstart] stage {name}: cached", flush=True)
            continue
        t = time.time()
        result = getattr(pipe, "regions_stage" if name == "regions" else name)()
        done[name] = {**result, "seconds": round(time.time() - t, 1)}
        atomic_write_json(done_file, done, indent=1)
        print(f"[quickstart] stage {name}: done in {time.time() - t:.1f}s", flush=True)
    summary = print_table(done["eval"])
    summary["wall_s"] = round(time.time() - t0, 1)
    summary["stage_seconds"] = {k: v["seconds"] for k, v in done.items()}
    print(f"\npicture of detections: {done['demo']['picture']}")
    print(json.dumps(json.loads(dumps_json(summary))))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(main())
