#!/usr/bin/env python
"""The main job: the whole open-vocabulary pipeline on the synthetic benchmark, on CPU, stage by stage.

    python tools/quickstart.py [--output-dir output/quickstart] [--force] [--backend torchvision|detectron2]
                               [KEY VALUE ...]

The pipeline is distill.integrations.quickstart. Stages (each cached under the output folder; a rerun skips
finished ones):
  data       the synthetic benchmark (base boxes only in training)
  text       class embeddings of the base and of all classes from the shipped tiny teacher
  proposals  a ViLD-text detector trained on base classes; its RPN's proposals on the training images
  regions    the teacher's region embeddings of those proposals (crops at 1x and 1.5x)
  vild       the ViLD detector (ViLD-text + ViLD-image), fine-tuned from the ViLD-text detector
  eval       box and mask AP for base, novel and all classes, for ViLD-text and ViLD
  demo       a picture of ViLD's detections on validation images, novel classes named
  semseg     an open-vocabulary semantic segmenter on the ViLD student's backbone (cross entropy on base
             pixels + pixel distillation to the teacher's region targets), mIoU of base and novel classes
             (torchvision backend; benchmarks/segmentation_ablation.py compares with cross entropy alone)
Ends with the tables and one line of JSON (box_AP50_novel, ..., semseg_mIoU_novel, ...). KEY VALUE pairs
override the configs (detector and segmenter).
`--backend detectron2` trains, proposes, evaluates and draws through detectron2 (its DefaultTrainer, RPN and
evaluators) with the same config, data, teacher and schedule.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # before torch is imported
    from distill.integrations.quickstart import main

    sys.exit(main())
