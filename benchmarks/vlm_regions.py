#!/usr/bin/env python
"""How well a teacher's frozen tower names ground-truth boxes from inside the whole image (F-VLM's VLM branch,
`distill.modeling.clip_backbone`), against the same boxes cropped (ViLD's region store, the zero-shot check):
zero-shot top-1 on a synthetic world's validation objects, base / novel, at several input scales; and how far
apart the crops' embeddings of one class and of two classes are (mean cosine).

    python benchmarks/vlm_regions.py [--teacher methods-tiny-rn] [--world-root DIR] [--images 300]
        [--scales 1 2 4] [--split val]

`--split train` scores the training images' boxes (base classes only: the training annotations have no novel
ones), to tell a teacher that does not fit the boxes it was tuned on (CLIPSelf) from one that does not generalise.

The world defaults to the methods benchmark's (made on first use under output/methods/world). Prints a table
and one line of JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STUDENT_MEAN = (123.675, 116.28, 103.53)
STUDENT_STD = (58.395, 57.12, 57.375)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="methods-tiny-rn", help="model-zoo teacher or open_clip arch")
    p.add_argument("--pretrained", default=None, help="weights for --teacher given as an arch")
    p.add_argument("--world-root", default=None, help="a methods world (default: output/methods/world)")
    p.add_argument("--images", type=int, default=300, help="images of --split with objects (default 300)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="input scales")
    p.add_argument("--split", choices=("val", "train"), default="val", help="the world's split (default val)")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    from distill.data import synthetic_dataset
    from distill.data.images import read_image_rgb
    from distill.data.synthetic import generate
    from distill.data.synthetic_methods import MethodsWorldConfig
    from distill.modeling.clip_backbone import CLIPTower
    from distill.teacher import create_teacher

    root = Path(a.world_root) if a.world_root else generate("output/methods/world", MethodsWorldConfig())
    teacher = create_teacher(a.teacher, a.pretrained)
    dicts, meta = synthetic_dataset(root, a.split)
    dicts = [d for d in dicts if d["annotations"]][: a.images]
    text = teacher.encode_text(meta.thing_classes, "vild")
    tower = CLIPTower(teacher.model.visual, teacher.mean, teacher.std, STUDENT_MEAN, STUDENT_STD)
    novel = set(meta.contiguous_ids("novel"))
    mean, std = torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1), torch.tensor(STUDENT_STD).view(1, 3, 1, 1)
    rows, crop_cosine = {}, {}
    for mode in ["crops"] + [f"in image x{s:g}" for s in a.scales]:
        correct, is_novel, embs, labels = [], [], [], []
        for d in dicts:
            img = read_image_rgb(d["file_name"])
            boxes = torch.tensor(
                [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (x["bbox"] for x in d["annotations"])]
            )
            if mode == "crops":
                emb = teacher.encode_regions([img], [boxes])
            else:
                s = float(mode.removeprefix("in image x"))
                x = img[None].float()
                x = F.interpolate(x, scale_factor=s, mode="bilinear") if s != 1 else x
                x = F.pad((x - mean) / std, (0, -x.shape[3] % 32, 0, -x.shape[2] % 32))
                with torch.no_grad():
                    emb = tower(x)[1]([boxes * s])
            pred = (emb @ text.t()).argmax(1)
            lab = torch.tensor([x["category_id"] for x in d["annotations"]])
            correct.append(pred == lab)
            is_novel.append(torch.tensor([int(c) in novel for c in lab]))
            embs.append(F.normalize(emb.float(), dim=-1))
            labels.append(lab)
        if mode == "crops":  # how far apart the crops of one class and of two classes are
            e, lab = torch.cat(embs), torch.cat(labels)
            sim, same = e @ e.t(), lab[:, None] == lab[None]
            off = ~torch.eye(len(lab), dtype=torch.bool)
            crop_cosine = {
                "same_class": sim[same & off].mean().item() if (same & off).any() else None,
                "other_class": sim[~same].mean().item() if (~same).any() else None,
            }
        c, n = torch.cat(correct).float(), torch.cat(is_novel)
        rows[mode] = {
            "all": 100 * c.mean().item(),
            "base": 100 * c[~n].mean().item() if (~n).any() else None,
            "novel": 100 * c[n].mean().item() if n.any() else None,
            "objects": int(c.numel()),
        }
    print(f"zero-shot top-1 of {a.teacher} on {len(dicts)} {a.split} images' objects\n")
    print("| regions | all | base | novel |\n|---|---|---|---|")
    for mode, r in rows.items():
        novel = "-" if r["novel"] is None else f"{r['novel']:.1f}"
        base = "-" if r["base"] is None else f"{r['base']:.1f}"
        print(f"| {mode} | {r['all']:.1f} | {base} | {novel} |")
    cos = {k: "-" if v is None else f"{v:.2f}" for k, v in crop_cosine.items()}
    print(
        f"\nmean cosine of two crops' embeddings: same class {cos['same_class']}, other classes {cos['other_class']}"
    )
    out = {
        "teacher": a.teacher,
        "split": a.split,
        "images": len(dicts),
        "rows": rows,
        "crop_cosine": crop_cosine,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
