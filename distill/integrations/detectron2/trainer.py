"""Training and evaluation on detectron2's `DefaultTrainer`, and the entry point of
`tools/train_net.py --backend detectron2` (detectron2's setup → main with `--eval-only` → launch).

What differs from DefaultTrainer: the model (`build_detector`), the training set (class ids remapped to the
training vocabulary by class name; RepeatFactorTrainingSampler on LVIS-protocol data), the mapper (distillation
proposals from MODEL.DISTILL.VILD.REGION_STORE), the optimizer (SOLVER.OPTIMIZER: SGD or AdamW, no weight decay
on the background embedding), the open-vocabulary evaluators and the test vocabulary switched in while testing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections import OrderedDict

import torch
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup, launch
from detectron2.engine import hooks as d2_hooks
from detectron2.solver.build import (
    get_default_optimizer_params,
    maybe_add_gradient_clipping,
    reduce_param_groups,
)
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from ...data.datasets import filter_empty
from ...evaluation import format_ov_table
from ...methods import method_class
from ...teacher.embeddings import ClassEmbeddings
from ...teacher.vocabulary import training_vocabulary
from ...utils.checkpoint import (
    META_KEY,
    inference_meta,
    last_checkpoint,
    require_checkpoint,
    torch_file_errors,
    upgrade_state_dict,
)
from ...utils.device import check_device
from ...utils.errors import DistillInputError, check_checkpoint_fits
from ...utils.interrupt import any_rank, stop_on_signals
from ...utils.io import dumps_json
from ...utils.outdir import claim_training_dir, lock_output_dir
from ..shared import build_optimizer, building_with, load_train_vocabulary, without_decay
from .builders import build_detector, load_detectron2_config
from .datasets import (
    OpenVocabDatasetMapper,
    load_ov_dataset,
    register_all,
    register_file_specs,
)
from .evaluation import OVEvaluator, flatten_ov_results, test_vocabulary

logger = logging.getLogger(__name__)


def load_train_set(cfg, vocab: ClassEmbeddings) -> tuple[list[dict], bool]:
    """Training dicts with category ids remapped to the vocabulary; True when any dataset is LVIS-protocol."""
    # framework-free, shared with the torchvision backend
    from ...data.datasets import remap_to_vocabulary

    dicts, lvis = [], False
    for name in cfg.DATASETS.TRAIN:
        ds, meta = load_ov_dataset(name)
        dicts += remap_to_vocabulary(ds, meta, vocab.class_names)
        lvis |= meta.evaluator_type == "lvis"
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_empty(dicts)
    if not dicts:
        raise DistillInputError(f"no training images with annotations in {list(cfg.DATASETS.TRAIN)}")
    return dicts, lvis


@contextlib.contextmanager
def _cpu_ddp():
    """DefaultTrainer wraps the model in DDP with device_ids=[local rank], which DDP refuses for CPU modules;
    on CPU (gloo) the wrap must pass device_ids=None. Scoped to DefaultTrainer.__init__."""
    import detectron2.engine.defaults as d2_defaults

    original = d2_defaults.create_ddp_model
    d2_defaults.create_ddp_model = functools.partial(original, device_ids=None)
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


def add_gradient_clipping(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """detectron2's SOLVER.CLIP_GRADIENTS ("value", "norm": each parameter on its own) plus "full_model": one
    norm over all gradients (as Mask2Former adds it; the torchvision backend reads the same three types)."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not (c.ENABLED and c.CLIP_TYPE == "full_model"):
        return maybe_add_gradient_clipping(cfg, optimizer)
    base = type(optimizer)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithFullModelGradientClip", (base,), {"step": step})
    return optimizer


class CheckedCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose unreadable file (empty, truncated, not a checkpoint) is one clear error."""

    def _load_file(self, filename: str) -> dict:
        with torch_file_errors(filename):
            loaded = super()._load_file(filename)
        if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
            raise DistillInputError("not a model checkpoint (no 'model' state dict)", filename)
        loaded["model"] = upgrade_state_dict(loaded["model"])
        return loaded

    def save(self, name: str, **kwargs) -> None:
        super().save(name, **{**getattr(self, "meta", {}), **kwargs})


class StrictCheckpointer(CheckedCheckpointer):
    """For evaluation and inference: a checkpoint of another architecture is one clear error, not a half-loaded
    model (training keeps DetectionCheckpointer's partial loading, e.g. of backbone-only weights)."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        check_checkpoint_fits(incompatible)
        return incompatible


class SaveOnSignal(d2_hooks.HookBase):
    """SIGINT / SIGTERM: the step in progress finishes, its checkpoint `model_{iter:07d}.pth` is saved (as
    PeriodicCheckpointer saves one, so --resume continues from it) and the run stops with one line saying where
    it is. The last hook: the others' after_step have run."""

    def before_train(self) -> None:
        self._signals = contextlib.ExitStack()
        self.stop = self._signals.enter_context(stop_on_signals())

    def after_step(self) -> None:
        t = self.trainer
        if t.iter + 1 >= t.max_iter:  # done, model_final saved: Ctrl-C stops the final evaluation as before
            self._signals.close()
            return
        if not any_rank(bool(self.stop)):
            return
        name = f"model_{t.iter:07d}"
        t.checkpointer.save(name, iteration=t.iter)  # rank 0 writes
        where = f"at iteration {t.iter + 1}/{t.max_iter}"
        path = os.path.join(t.checkpointer.save_dir, f"{name}.pth")
        raise self.stop.interrupted(where, path, "run the same command with --resume to continue")

    def after_train(self) -> None:
        self._signals.close()


class DistillTrainer(DefaultTrainer):
    def __init__(self, cfg):
        check_device(cfg.MODEL.DEVICE, "MODEL.DEVICE")
        if cfg.SOLVER.AMP.ENABLED and torch.device(cfg.MODEL.DEVICE).type == "cpu":
            logger.info("SOLVER.AMP.ENABLED: mixed precision is for GPUs; training in fp32 on the CPU")
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.AMP.ENABLED = False
            cfg.freeze()
        cpu_group = comm.get_world_size() > 1 and torch.device(cfg.MODEL.DEVICE).type == "cpu"
        with _cpu_ddp() if cpu_group else contextlib.nullcontext():
            super().__init__(cfg)
        self.checkpointer.__class__ = CheckedCheckpointer  # same state, reads files with one-line errors
        self.checkpointer.meta = {META_KEY: inference_meta("detectron2", cfg, load_train_vocabulary(cfg))}

    @classmethod
    def build_model(cls, cfg):
        return build_detector(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return add_gradient_clipping(
            cfg, build_optimizer(cfg, without_decay(params, model, reduce_param_groups))
        )

    @classmethod
    def build_train_loader(cls, cfg):
        vocab = load_train_vocabulary(cfg)
        dicts, lvis = load_train_set(cfg, vocab)
        method_class(cfg).check_training(cfg, [x["image_id"] for x in dicts], vocab)  # fail early, clearly
        if lvis and cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            logger.info(
                "LVIS-protocol training data: using RepeatFactorTrainingSampler (threshold %s)",
                cfg.DATALOADER.REPEAT_THRESHOLD,
            )
            cfg = cfg.clone()
            cfg.defrost()
            cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
        return build_detection_train_loader(cfg, mapper=OpenVocabDatasetMapper(cfg, True), dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=OpenVocabDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return OVEvaluator(
            dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test, one dataset at a time, each with its own test vocabulary; like DefaultTrainer,
        the results of a single dataset come back without the dataset level."""
        if evaluators is not None and not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        results = OrderedDict()
        for i, name in enumerate(cfg.DATASETS.TEST):
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            with test_vocabulary(model, cfg, name):
                results[name] = super().test(one, model, None if evaluators is None else [evaluators[i]])
        return results[cfg.DATASETS.TEST[0]] if len(results) == 1 else results

    def build_hooks(self):
        """DefaultTrainer's hooks; the checkpointer keeps SOLVER.CHECKPOINT_MAX_TO_KEEP periodic ones; a
        signal saves a checkpoint and stops (SaveOnSignal)."""
        hooks = super().build_hooks()
        keep = self.cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP
        for h in hooks:
            if isinstance(h, d2_hooks.PeriodicCheckpointer) and keep > 0:
                h.max_to_keep = keep
        return [*hooks, SaveOnSignal()]

    def build_writers(self):
        writers = [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
        ]
        try:
            from detectron2.utils.events import TensorboardXWriter
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:  # tensorboard is optional, as in the torchvision backend
            return writers
        return writers + [TensorboardXWriter(self.cfg.OUTPUT_DIR)]


# ---------------------------------------------------------------- tools/train_net.py --backend detectron2
def setup(args):
    """Config (detectron2 defaults + MODEL.DISTILL ← yaml ← overrides), datasets, detectron2's default_setup."""
    from ... import model_zoo
    from ...config import check_schedule
    from ...data.catalog import datasets_root

    if args.eval_only and not args.config_file:  # the checkpoint's own config
        from ..inference import eval_only_config

        cfg = eval_only_config(args.opts, load_detectron2_config)
    else:
        cfg = load_detectron2_config(args.config_file or None, args.opts)
    if not args.eval_only:
        for w in check_schedule(cfg):
            print(f"warning: {w}", file=sys.stderr)
    register_all(datasets_root(cfg))
    register_file_specs([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])  # coco:A.json:IMAGES names
    if comm.get_rank() == 0:
        if args.eval_only:
            lock_output_dir(cfg.OUTPUT_DIR)
        else:
            claim_training_dir(cfg.OUTPUT_DIR, args.resume, getattr(args, "overwrite", False))
    if cfg.MODEL.WEIGHTS:
        cfg.defrost()
        cfg.MODEL.WEIGHTS = model_zoo.resolve_weights(cfg.MODEL.WEIGHTS)
        cfg.freeze()
    default_setup(cfg, args)
    return cfg


def print_results(results: dict) -> None:
    for name, res in results.items():
        flat = flatten_ov_results(res)
        print(f"\n{name}:\n{format_ov_table(flat)}")
        print(dumps_json({"dataset": name, **flat}), flush=True)


def main(args) -> dict:
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise DistillInputError("--eval-only needs MODEL.WEIGHTS (a checkpoint path or model-zoo name)")
        if "://" not in cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise DistillInputError("MODEL.WEIGHTS not found", cfg.MODEL.WEIGHTS)
        meta = (
            require_checkpoint(cfg.MODEL.WEIGHTS, "detector", "MODEL.WEIGHTS")
            if "://" not in cfg.MODEL.WEIGHTS
            else {}
        )
        with building_with(training_vocabulary(cfg, meta)):  # evaluation switches in the test vocabulary
            model = DistillTrainer.build_model(cfg)
        StrictCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = DistillTrainer.test(cfg, model)
    else:
        trainer = DistillTrainer(cfg)
        if args.resume:
            last_checkpoint(cfg.OUTPUT_DIR)  # a tag naming a missing / empty file: one line
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None) or {}
    if len(cfg.DATASETS.TEST) == 1 and results:
        results = {cfg.DATASETS.TEST[0]: results}
    if comm.is_main_process():
        print_results(results)
    return results


def _main_in_env_group(args) -> None:
    """Processes started by torchrun or by tools/train_net.py (RANK / WORLD_SIZE / LOCAL_RANK in the environment)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", args.num_gpus)))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main(args)


def train_main(args) -> int:
    """`tools/train_net.py --backend detectron2`: one process, or detectron2's `launch` for --num-gpus /
    --num-machines (gloo on CPU), or join the process group a launcher already describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _main_in_env_group(args)
    else:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    return 0
