#!/usr/bin/env python
"""Ranks every registered distillation method (and F-ViT on the CLIPSelf teacher: TEACHER_ROWS) on the method
benchmark's synthetic world with one schedule and several seeds: box AP50 novel / base / all, mask AP novel, APr / APc / APf (mean ± std over seeds), and each
method's pipeline cost from nothing to its metrics.

    python benchmarks/methods.py run [--methods NAME ...] [--seeds S ...] --output-dir DIR [KEY VALUE ...]
    python benchmarks/methods.py report --output-dir DIR [--json]
    python benchmarks/methods.py sweep --output-dir DIR --method fvlm [--seeds S ...] [--pairs A,B ...]

Layout of DIR (every piece cached: `run` skips what is done and resumes what was cut):
    benchmark.json            the schedule (world, iterations, teacher, overrides): a DIR holds one
    world/                    the world (distill.data.synthetic_methods), made once, shared by the seeds
    seed{S}/shared/           stages several methods share, made once per seed with the quickstart's Pipeline:
                              text embeddings, the proposal network (the vild_text detector on the schedule),
                              its proposals on the training images, the teacher's region store, the ViT
                              teacher's text embeddings (text_vit/, for the methods in VIT_METHODS) and the
                              CLIPSelf teacher's (text_clipself/, TEACHER_ROWS); costs.json holds their CPU s
    seed{S}/{row}/            one cell: train/ (its training, unless it is the proposal network itself) and
                              metrics.json (its metrics and its cost), written last: a cell without it is
                              not done; sweep/ the evaluations of `sweep` (the same model, other test keys)

Cost of a cell: CPU seconds (user + system of this process and of its reaped children: the data-loader
workers) of each stage the method needs, shared stages counted once; teacher image-tower forwards per
training image (the region store's crops, an online teacher's crops over the training, or a frozen-tower
backbone's images seen, over the training images; 0 for a method without a teacher's image tower). The world's
generation is the benchmark's, not a method's, and is left out.

Schedule (`--init`): with proposal-network (default) every detector sees 2 x --iters iterations: the methods on
the student's own backbone fine-tune the proposal network (ViLD-text's detector, --iters) for --iters more, as
the quickstart fine-tunes ViLD, ViLD-text included (the same iterations, no teacher); the methods on another
backbone (F-VLM's frozen tower) train 2 x --iters from scratch. With scratch every method trains --iters from
scratch and ViLD-text's cell is the proposal network.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
from pathlib import Path

from distill.data.synthetic import generate
from distill.data.synthetic_methods import MethodsWorldConfig
from distill.integrations import quickstart
from distill.integrations.backend import check_config_early
from distill.methods import get_method_entry, method_names
from distill.methods.fvlm import BACKBONE as CLIP_BACKBONE  # torch-free (this tool's --help stays fast)
from distill.model_zoo import get_config_file
from distill.utils import DistillInputError, atomic_write_json, cli_entry, dumps_json, read_json
from distill.utils.cli import ToolParser, nonneg_int, parse_args, positive_int
from distill.utils.io import atomic_write_bytes
from distill.utils.outdir import lock_output_dir

TEACHER = "methods-tiny-rn"  # the model zoo's teacher of the methods world (ResNet)
VIT_TEACHER = "methods-tiny-vit"  # the model zoo's ViT teacher of the methods world
PROPOSAL_METHOD = "vild_text"  # the proposal network is this method's detector on the schedule (as in ViLD)
# every training's iterations: about 0.8 CPU s each on 2 cores (batch 8, 128 pixels), so that a cell's training
# and evaluation of 1,000 images fit in about 15 minutes (the config's from-scratch schedule)
ITERS = 800
EVAL_DATASET = "distill_synthetic_lvis_val"  # LVIS protocol: base / novel and r / c / f
SHARED_STAGES = (
    "text",
    "proposal_network",
    "proposals",
    "regions",
    "text_vit",
    "text_clipself",
    "text_coop",
    "text_detpro",
)
CLIPSELF_TEACHER = "methods-tiny-vit-clipself"  # the ViT teacher after CLIPSelf (tools/train_clipself.py)
# methods whose cells run on the schedule's ViT teacher (--vit-teacher): F-ViT is F-VLM on a ViT tower
VIT_METHODS = ("fvit",)
# rows of a method on another of the schedule's teachers: row → (method, the schedule's key of its teacher)
TEACHER_ROWS = {"fvit_clipself": ("fvit", "clipself_teacher")}
# rows of a method on learned prompts' class embeddings (tools/train_prompts.py on the seed's data, the
# schedule's teacher): row → (method, prompt method); CoOp learns from ground-truth crops, DetPro from the
# region store's proposals
PROMPT_ROWS = {"vild_coop": ("vild", "coop"), "vild_detpro": ("vild", "detpro")}
PROMPT_STEPS = 300  # tools/train_prompts.py's default (--prompt-steps)
# each of the schedule's teachers: its class embeddings are this shared stage (and folder)
TEXT_STAGES = {"teacher": "text", "vit_teacher": "text_vit", "clipself_teacher": "text_clipself"}
# per-method settings the tiny teachers need: their text tower reads 24 positions (BARON: 9 regions x 2 words + 2)
METHOD_OPTS = {"baron": ["MODEL.DISTILL.BARON.NUM_WORDS", "2"]}
# `sweep`: (BASE_VLM_WEIGHT, NOVEL_VLM_WEIGHT) pairs evaluated on a trained F-VLM / F-ViT cell; (0, 0) is the
# detector alone and (1, 1) the VLM alone, also reported as rows of their own
SWEEP_PAIRS = (
    (0.0, 0.0),
    (1.0, 1.0),
    (0.35, 0.65),
    (0.1, 0.8),
    (0.2, 0.5),
    (0.35, 0.8),
    (0.5, 0.8),
    (0.1, 0.5),
)
SWEEP_ROWS = {(0.0, 0.0): "detector only", (1.0, 1.0): "VLM only"}
COST_STAGES = ("text", "proposal_network", "proposals", "regions", "training", "evaluation")
# report columns: (json name, evaluator key, table header)
METRICS = (
    ("box_AP50_novel", "box_AP50_novel", "box AP50 novel"),
    ("box_AP50_base", "box_AP50_base", "box AP50 base"),
    ("box_AP50_all", "box_AP50", "box AP50 all"),
    ("mask_AP_novel", "mask_AP_novel", "mask AP novel"),
    ("APr", "mask_APr", "APr"),
    ("APc", "mask_APc", "APc"),
    ("APf", "mask_APf", "APf"),
)
COSTS = (
    *((f"cpu_s_{s}", s) for s in COST_STAGES),
    ("cpu_s_total", "CPU s total"),
    ("teacher_forwards_per_train_image", "teacher fwd / train img"),
)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its reaped children (data-loader
    workers exit at the end of their loader, so a finished stage's workers are counted)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class SeedPipeline(quickstart.Pipeline):
    """The quickstart's Pipeline on the method benchmark's world, one seed, in DIR/seed{S}/shared."""

    def __init__(self, root: Path, seed: int, schedule: dict, progress: bool):
        overrides = ["SEED", str(seed), *schedule["overrides"]]
        iters = (schedule["iters"], schedule["iters"])
        super().__init__(
            root / f"seed{seed}" / "shared", overrides, progress, *schedule["teacher"], iters=iters
        )
        self.root, self.seed, self.schedule = root, seed, schedule
        self.costs_file = self.out / "costs.json"

    def data(self) -> dict:
        """The world, made once in DIR/world; each seed's shared folder links to it."""
        world = generate(
            self.root / "world", MethodsWorldConfig(**self.schedule["world"]), progress=self.progress
        )
        link = self.out / "synthetic"
        self.out.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path("..", "..", "world"))
        self.backend.register_datasets(self.out)
        return {"root": str(world)}

    def costs(self) -> dict:
        return read_json(self.costs_file) if self.costs_file.is_file() else {}

    def ensure(self, stage: str) -> dict:
        """Run a shared stage unless done; its record (cpu_s and what the stage returned)."""
        done = self.costs()
        if stage in done and self.outputs_exist(stage, done[stage]):
            return done[stage]
        if stage in done:  # its record was kept (a committed table), its files were not: made again
            print(
                f"[methods] seed {self.seed} {stage}: recorded but its files are gone, made again", flush=True
            )
        t = cpu_seconds()
        if stage == "text":
            result = self.text()
        elif stage in ("text_coop", "text_detpro"):  # learned prompts, then the class embeddings they give
            result = self.prompts(stage.removeprefix("text_"))
        elif stage.startswith("text_"):  # another teacher's class embeddings, in their own folder
            key = next(k for k, v in TEXT_STAGES.items() if v == stage)
            result = self.text(tuple(self.schedule[key]), self.out / stage)
        elif stage == "proposal_network":
            weights = self._train("vild_text", ["MODEL.DISTILL.METHOD", PROPOSAL_METHOD] + self.max_iter())
            result = {"weights": weights}
        elif stage == "proposals":
            result = self.proposals()  # the proposal network is trained: only its proposals are made
        else:
            result = self.regions_stage()
            # every kept proposal is cropped and encoded once per scale
            scales = read_json(self.regions / "meta.json", what="region store meta.json")["scales"]
            result["crops"] = result["num_regions"] * len(scales)
        done = self.costs()
        done[stage] = {**result, "cpu_s": round(cpu_seconds() - t, 2)}
        atomic_write_json(self.costs_file, done, indent=1)
        return done[stage]

    def outputs_exist(self, stage: str, record: dict) -> bool:
        """Whether a recorded shared stage's files are still here (only its costs may have been kept)."""
        paths = {
            "text": [self.text_dir / "synthetic_all.npy"],
            **{
                t: [self.out / t / "synthetic_all.npy"]
                for t in (*TEXT_STAGES.values(), "text_coop", "text_detpro")
                if t != "text"
            },
            "proposal_network": [Path(record.get("weights", self.out / "missing"))],
            "proposals": [self.out / "proposals_train.json"],
            "regions": [self.regions / "index.json"],
        }[stage]
        return all(Path(p).is_file() for p in paths)

    def max_iter(self) -> list[str]:
        return ["SOLVER.MAX_ITER", str(self.schedule["iters"])]

    def prompts(self, method: str) -> dict:
        """Learned prompts of `method` (coop: the training images' ground-truth crops; detpro: the region store's
        proposals) for the base classes, seeded by the seed, in prompts/; the class embeddings they give in
        text_{method}/. DetPro needs the region store (made first)."""
        from distill.data import synthetic_dataset
        from distill.teacher import create_teacher
        from distill.teacher.prompt_training import (
            PromptTrainConfig,
            gt_crop_samples,
            store_samples,
            train_prompts,
        )

        if method == "detpro":
            self.ensure("regions")
        teacher = create_teacher(*self.teacher_spec)
        dicts, meta = synthetic_dataset(self.out / "synthetic", "train")
        base = [meta.thing_classes[i] for i in meta.contiguous_ids("base")]
        if method == "coop":
            data = gt_crop_samples(teacher, dicts, meta, base, self.progress)
        else:
            from distill.data.region_store import RegionEmbeddingStore

            data = store_samples(RegionEmbeddingStore(self.regions), dicts, meta, base)
        path = self.out / "prompts" / f"{method}.safetensors"
        steps = self.schedule.get("prompt_steps", PROMPT_STEPS)
        cfg = PromptTrainConfig(method=method, steps=steps, seed=self.seed)
        source = {"dataset": "methods world", "split": "train", "source": method}
        train_prompts(teacher, data, base, cfg, path, self.out / "prompts" / f"{method}.work", source,
                      progress=self.progress)  # fmt: skip
        return {"steps": steps, **self.text(None, self.out / f"text_{method}", str(path))}

    def cell_cfg(self, row: str, extra: list[str] = ()):
        """A row's config: the schedule, its method, the config values the method requires
        (`required_config`), and, where the row runs on another of the schedule's teachers (`teacher_key`), that
        teacher with its class embeddings."""
        from distill.methods import method_class

        method, key, text = method_of(row), teacher_key(row), text_stage(row)
        required = method_class(self.cfg("vild_text", ["MODEL.DISTILL.METHOD", method])).required_config
        opts = ["MODEL.DISTILL.METHOD", method, *(str(x) for kv in required.items() for x in kv)]
        opts += METHOD_OPTS.get(method, [])
        if key != "teacher":
            arch, weights = self.schedule[key]
            opts += ["MODEL.DISTILL.TEACHER.ARCH", arch, "MODEL.DISTILL.TEACHER.PRETRAINED", weights or ""]
        if text != "text":
            for node, name in (("TRAIN", "base"), ("TEST", "all")):
                opts += [
                    f"MODEL.DISTILL.{node}_CLASS_EMBEDDINGS",
                    str(self.out / text / f"synthetic_{name}.npy"),
                ]
        return self.cfg("vild_text", [*opts, *extra])


def method_of(row: str) -> str:
    """The registered method a table row runs (a row of TEACHER_ROWS runs its method on another teacher, one of
    PROMPT_ROWS on learned prompts' class embeddings)."""
    return {**TEACHER_ROWS, **PROMPT_ROWS}.get(row, (row,))[0]


def text_stage(row: str) -> str:
    """The shared stage of the row's class embeddings."""
    if row in PROMPT_ROWS:
        return f"text_{PROMPT_ROWS[row][1]}"
    return TEXT_STAGES[teacher_key(row)]


def teacher_key(row: str) -> str:
    """The schedule's key of the teacher a row runs on: teacher, vit_teacher or clipself_teacher."""
    if row in TEACHER_ROWS:
        return TEACHER_ROWS[row][1]
    return "vit_teacher" if row in VIT_METHODS else "teacher"


def method_needs(pipe: SeedPipeline, method: str) -> tuple[bool, bool]:
    """(whether its training reads the teacher's region store, whether it runs the teacher online)."""
    from distill.methods import RegionStoreSource, method_class

    cfg = pipe.cfg("vild_text", ["MODEL.DISTILL.METHOD", method])
    cls = method_class(cfg)
    return isinstance(cls.target_source(cfg, True), RegionStoreSource), bool(
        getattr(cls, "uses_teacher", False)
    )


def on_proposal_network(pipe: SeedPipeline, row: str) -> bool:
    """Whether the row's detector is the proposal network's architecture (it can start from its weights):
    every method but those whose backbone is the teacher's frozen tower."""
    return pipe.cell_cfg(row).MODEL.BACKBONE.NAME != CLIP_BACKBONE


def online_teacher_crops(weights: str) -> float:
    """The teacher crops an online-teacher method encoded over its training (its `teacher_crops` counter,
    saved in the checkpoint with the method's state; a fine-tuned cell's count starts at 0)."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=False)
    state = state.get("model", state)
    return float(sum(int(v) for k, v in state.items() if k.endswith("method.teacher_crops")))


def run_cell(pipe: SeedPipeline, row: str) -> dict:
    """Train and evaluate one row (a method, or a method on another teacher) x seed; writes
    DIR/seed{S}/{row}/metrics.json last."""
    import torch

    method = method_of(row)
    cell = pipe.root / f"seed{pipe.seed}" / row
    store, online = method_needs(pipe, method)
    init = pipe.schedule.get("init", "scratch")
    fine_tune = init == "proposal_network" and on_proposal_network(pipe, row)
    texts = list(dict.fromkeys([TEXT_STAGES[teacher_key(row)], text_stage(row)]))
    stages = texts[:1] + (["proposal_network", "proposals", "regions"] if store else [])
    if method == PROPOSAL_METHOD or fine_tune:
        stages.append("proposal_network")
    stages += texts[
        1:
    ]  # learned prompts last: DetPro's learn from the region store, made (and counted) before
    cost = {s: pipe.ensure(s)["cpu_s"] for s in dict.fromkeys(stages)}
    cost["text"] = sum(cost.pop(t) for t in texts)  # the class embeddings the row uses, from nothing
    if method == PROPOSAL_METHOD and not fine_tune:  # its training is the proposal network's, counted once
        weights = pipe.ensure("proposal_network")["weights"]
        cfg = pipe.cell_cfg(method)
        cost["training"] = cost.pop("proposal_network")
    else:
        if fine_tune:  # ITERS more from the proposal network's weights (ViLD-text too: same iterations)
            extra = [*pipe.max_iter(), "MODEL.WEIGHTS", pipe.ensure("proposal_network")["weights"]]
        elif init == "proposal_network":  # from scratch, as many iterations as the rest
            extra = ["SOLVER.MAX_ITER", str(2 * pipe.schedule["iters"])]
        else:
            extra = pipe.max_iter()
        cfg = pipe.cell_cfg(row, [*extra, "OUTPUT_DIR", str(cell / "train")])
        t = cpu_seconds()
        weights = str(Path(cfg.OUTPUT_DIR) / "model_final.pth")
        if not Path(weights).is_file():
            pipe.backend.train(cfg, pipe.progress)
        cost["training"] = round(cpu_seconds() - t, 2)
    t = cpu_seconds()
    model = pipe.backend.load_model(cfg, weights)
    with torch.no_grad():
        metrics = pipe.backend.evaluate(cfg, model, EVAL_DATASET)
    cost["evaluation"] = round(cpu_seconds() - t, 2)
    num_train = max(pipe.schedule["world"]["num_train"], 1)
    forwards = online_teacher_crops(weights) / num_train if online else 0.0
    if store:
        forwards = pipe.ensure("regions")["crops"] / num_train
    if cfg.MODEL.BACKBONE.NAME == CLIP_BACKBONE:
        # the teacher's tower is the backbone: one forward per training image seen
        forwards = cfg.SOLVER.MAX_ITER * cfg.SOLVER.IMS_PER_BATCH / num_train
    record = {
        "method": row,
        "seed": pipe.seed,
        "metrics": metrics,
        "cost": {
            **{f"cpu_s_{s}": cost.get(s, 0.0) for s in COST_STAGES},
            "cpu_s_total": round(sum(cost.values()), 2),
            "teacher_forwards_per_train_image": forwards,
        },
    }
    atomic_write_json(cell / "metrics.json", record, indent=1)
    return record


def sweep_cell(pipe: SeedPipeline, method: str, pairs) -> list[dict]:
    """Evaluate a trained cell of an F-VLM-style method (keys BASE_VLM_WEIGHT / NOVEL_VLM_WEIGHT) with other
    ensemble weights; each pair cached in DIR/seed{S}/{method}/sweep/a{A}_b{B}.json."""
    import torch

    cell = pipe.root / f"seed{pipe.seed}" / method
    weights = cell / "train" / "model_final.pth"
    if not (cell / "metrics.json").is_file() or not weights.is_file():
        raise DistillInputError(f"seed {pipe.seed} {method}: no trained cell to sweep (run it first)", cell)
    entry = get_method_entry(method_of(method))
    node = entry.node
    if "NOVEL_VLM_WEIGHT" not in entry.keys:
        raise DistillInputError(f"method {method} has no BASE_VLM_WEIGHT / NOVEL_VLM_WEIGHT to sweep")
    out = []
    for a, b in pairs:
        path = cell / "sweep" / f"a{a:g}_b{b:g}.json"
        if not path.is_file():
            keys = [
                f"MODEL.DISTILL.{node}.BASE_VLM_WEIGHT",
                str(a),
                f"MODEL.DISTILL.{node}.NOVEL_VLM_WEIGHT",
                str(b),
            ]
            cfg = pipe.cell_cfg(method, [*keys, "OUTPUT_DIR", str(cell / "sweep" / f"a{a:g}_b{b:g}")])
            model = pipe.backend.load_model(cfg, str(weights))
            with torch.no_grad():
                metrics = pipe.backend.evaluate(cfg, model, EVAL_DATASET)
            atomic_write_json(path, {"method": method, "seed": pipe.seed, "a": a, "b": b, "metrics": metrics})
            print(f"[methods] seed {pipe.seed} {method} a={a:g} b={b:g}: evaluated", flush=True)
        out.append(read_json(path, what="sweep cell"))
    return out


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise DistillInputError(f"--pairs takes A,B pairs of numbers, got {text!r}") from None
    if not (0 <= a <= 1 and 0 <= b <= 1):
        raise DistillInputError(f"--pairs: weights must be in [0, 1], got {text!r}")
    return a, b


def cmd_sweep(args) -> int:
    root = Path(args.output_dir)
    if not (root / "benchmark.json").is_file():
        raise DistillInputError("--output-dir holds no benchmark (benchmark.json): run it first", root)
    schedule = read_json(root / "benchmark.json", what="benchmark.json")
    lock_output_dir(root, "--output-dir")
    pairs = [_pair(p) for p in args.pairs] if args.pairs else list(SWEEP_PAIRS)
    seeds = (
        args.seeds
        if args.seeds is not None
        else sorted(
            int(p.parent.parent.name.removeprefix("seed"))
            for p in root.glob(f"seed*/{args.method}/metrics.json")
        )
    )
    for seed in seeds:
        pipe = SeedPipeline(root, seed, schedule, not args.no_progress)
        pipe.data()
        sweep_cell(pipe, args.method, pairs)
    print_sweep(root, args.method)
    return 0


def sweep_table(root: Path, method: str) -> dict:
    """{(a, b): {metric: stats over seeds}} of the cached sweep evaluations of `method`."""
    per: dict[tuple, dict[str, dict]] = {}
    for path in sorted(root.glob(f"seed*/{method}/sweep/*.json")):
        rec = read_json(path, what="sweep cell")
        row = per.setdefault((rec["a"], rec["b"]), {})
        for name, key, _ in METRICS:
            row.setdefault(name, {})[str(rec["seed"])] = rec["metrics"].get(key)
    return {pair: {k: _stats(v) for k, v in row.items()} for pair, row in sorted(per.items())}


def print_sweep(root: Path, method: str) -> None:
    table = sweep_table(root, method)
    print(
        f"\n{method}: ensemble weights a (base) / b (novel) on the validation split, mean ± std over seeds\n"
    )
    print("| a | b | seeds | box AP50 novel | box AP50 base | box AP50 all |\n|---|---|---|---|---|---|")
    for (a, b), r in table.items():
        n = len(r["box_AP50_novel"]["per_seed"])
        print(
            f"| {a:g} | {b:g} | {n} | "
            + " | ".join(_cell(r[k]) for k in ("box_AP50_novel", "box_AP50_base", "box_AP50_all"))
            + " |"
        )


def schedule_of(args) -> dict:
    world = dataclasses.asdict(
        MethodsWorldConfig(
            seed=args.world_seed, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size
        )
    )
    return {
        "world": world,
        "iters": args.iters,
        "teacher": [args.teacher, args.teacher_weights],
        "vit_teacher": [args.vit_teacher, args.vit_teacher_weights],
        "clipself_teacher": [args.clipself_teacher, args.clipself_teacher_weights],
        "overrides": list(args.overrides),
        "init": args.init.replace("-", "_"),
        "prompt_steps": args.prompt_steps,
    }


def check_schedule(root: Path, schedule: dict) -> None:
    """A DIR holds cells of one schedule: another one is refused, not mixed into the table. Until a stage
    has finished, a new schedule replaces the old (a first run that failed at once binds nothing)."""
    path = root / "benchmark.json"
    if path.is_file():
        was = read_json(path, what="benchmark.json")
        started = any(root.glob("seed*/shared/costs.json")) or any(root.glob("seed*/*/metrics.json"))
        if was != schedule and started:
            diff = sorted(k for k in schedule if was.get(k) != schedule[k])
            raise DistillInputError(
                f"--output-dir holds cells of another schedule (it differs in {', '.join(diff)}); use its "
                "settings or another --output-dir",
                root,
            )
    atomic_write_json(path, schedule, indent=1)


def cmd_run(args) -> int:
    methods = args.methods or [*method_names(), *TEACHER_ROWS, *PROMPT_ROWS]
    for m in methods:
        get_method_entry(method_of(m))  # an unknown name is one line before any stage runs
    check_config_early(get_config_file(quickstart.CONFIG), args.overrides)  # a typo'd key, too
    root = Path(args.output_dir)
    lock_output_dir(root, "--output-dir")
    schedule = schedule_of(args)
    check_schedule(root, schedule)
    seeds = args.seeds if args.seeds is not None else list(range(3))
    for seed in seeds:
        pipe = SeedPipeline(root, seed, schedule, not args.no_progress)
        pipe.data()
        for m in methods:
            if (root / f"seed{seed}" / m / "metrics.json").is_file():
                print(f"[methods] seed {seed} {m}: cached", flush=True)
                continue
            rec = run_cell(pipe, m)
            print(f"[methods] seed {seed} {m}: done, {rec['cost']['cpu_s_total']:.0f} CPU s", flush=True)
    print_report(collect(root), as_json=False)
    return 0


def _stats(per_seed: dict) -> dict:
    values = [v for v in per_seed.values() if v is not None]
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    return {"mean": mean, "std": std, "per_seed": per_seed}


def collect(root: Path) -> dict:
    """{"methods": {NAME: {column: {"mean", "std", "per_seed": {seed: value}}}}} from the finished cells."""
    cells = sorted(root.glob("seed*/*/metrics.json"))
    if not cells:
        raise DistillInputError("no finished cell (seed*/<method>/metrics.json) in --output-dir", root)
    by_method: dict[str, dict[str, dict]] = {}
    for path in cells:
        rec = read_json(path, what="benchmark cell")
        row = by_method.setdefault(rec["method"], {})
        values = {name: rec["metrics"].get(key) for name, key, _ in METRICS} | {
            name: rec["cost"].get(name) for name, _ in COSTS
        }
        for name, v in values.items():
            row.setdefault(name, {})[str(rec["seed"])] = v
    methods = {m: {k: _stats(per) for k, per in row.items()} for m, row in sorted(by_method.items())}
    for m in list(methods):  # an F-VLM-style cell evaluated at a = b = 0 and a = b = 1: rows of their own
        table = sweep_table(root, m)
        for pair, label in SWEEP_ROWS.items():
            if pair in table:
                methods[f"{m} ({label})"] = table[pair]
    return {"methods": methods}


def _cell(s: dict, digits: int = 1) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def render_markdown(table: dict) -> str:
    """The report's two tables (metrics; pipeline costs) as markdown, from `collect`'s dict (or its JSON)."""
    rows = dict(
        sorted(table["methods"].items())
    )  # the JSON's order (sorted keys): a method, then its sweep rows
    seeds = {m: len(r["box_AP50_novel"]["per_seed"]) for m, r in rows.items()}
    cols = [h for _, _, h in METRICS]
    lines = ["| method | seeds | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for m, r in rows.items():
        lines.append(f"| {m} | {seeds[m]} | " + " | ".join(_cell(r[n]) for n, _, _ in METRICS) + " |")
    heads = [h for _, h in COSTS]
    lines += [
        "",
        "pipeline cost from nothing to the metrics (CPU seconds per stage, shared stages counted once)",
        "",
    ]
    lines.append("| method | " + " | ".join(h.removeprefix("cpu_s_") for h in heads) + " |")
    lines.append("|---" * (len(heads) + 1) + "|")
    for m, r in rows.items():
        if COSTS[0][0] not in r:  # a sweep's row: the cost is its cell's
            continue
        lines.append(
            f"| {m} | " + " | ".join(_cell(r[n], 0 if n.startswith("cpu") else 1) for n, _ in COSTS) + " |"
        )
    return "\n".join(lines) + "\n"


PAGE_START, PAGE_END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def write_page(page: Path, table: dict, json_path: Path) -> None:
    """The table's JSON to `json_path` and its markdown between the page's PAGE_START / PAGE_END markers."""
    text = page.read_text()
    if PAGE_START not in text or PAGE_END not in text:
        raise DistillInputError(f"--page has no {PAGE_START} ... {PAGE_END} block", page)
    head, rest = text.split(PAGE_START, 1)
    _, tail = rest.split(PAGE_END, 1)
    atomic_write_json(json_path, table, indent=1)
    body = f"{PAGE_START}\n<!-- made by benchmarks/methods.py report --page from {json_path.name} -->\n\n"
    atomic_write_bytes(page, (head + body + render_markdown(table) + "\n" + PAGE_END + tail).encode())


def print_report(table: dict, as_json: bool) -> None:
    if as_json:
        print(dumps_json(table))
        return
    print("\n" + render_markdown(table))


def cmd_report(args) -> int:
    root = Path(args.output_dir)
    if not root.is_dir():
        raise DistillInputError("--output-dir not found", root)
    table = collect(root)
    if args.page:
        write_page(Path(args.page), table, Path(args.json_out))
    print_report(table, args.json)
    return 0


def run_parser() -> ToolParser:
    r = ToolParser(prog="methods.py run", description="run the cells not yet done, then print the table")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--methods", nargs="+", default=None, help="registered method names (default: all)")
    r.add_argument("--seeds", nargs="+", type=nonneg_int, default=None, help="seeds (default: 0 1 2)")
    r.add_argument("--iters", type=positive_int, default=ITERS, help="iterations of every training")
    r.add_argument(
        "--prompt-steps",
        type=positive_int,
        default=PROMPT_STEPS,
        help=f"training steps of the learned prompts of {', '.join(PROMPT_ROWS)}",
    )
    r.add_argument(
        "--init",
        choices=("proposal-network", "scratch"),
        default="proposal-network",
        help="proposal-network: the methods on the student's backbone fine-tune the proposal network for "
        "--iters, the others train 2 x --iters from scratch; scratch: every method trains --iters from scratch "
        "(ViLD-text's cell is the proposal network)",
    )
    d = MethodsWorldConfig()
    r.add_argument("--num-train", type=positive_int, default=d.num_train, help="training images of the world")
    r.add_argument("--num-val", type=positive_int, default=d.num_val, help="validation images of the world")
    r.add_argument("--image-size", type=positive_int, default=d.image_size, help="the world's image side")
    r.add_argument("--world-seed", type=nonneg_int, default=0, help="the world's seed (one world, all seeds)")
    r.add_argument("--teacher", default=TEACHER, help="model-zoo teacher or open_clip arch")
    r.add_argument("--teacher-weights", default=None, help="checkpoint for --teacher given as an arch")
    r.add_argument(
        "--vit-teacher",
        default=VIT_TEACHER,
        help=f"the ViT teacher of {', '.join(VIT_METHODS)} (zoo or arch)",
    )
    r.add_argument(
        "--vit-teacher-weights", default=None, help="checkpoint for --vit-teacher given as an arch"
    )
    r.add_argument(
        "--clipself-teacher",
        default=CLIPSELF_TEACHER,
        help=f"the ViT teacher after CLIPSelf, of the rows {', '.join(TEACHER_ROWS)} (zoo or arch)",
    )
    r.add_argument(
        "--clipself-teacher-weights", default=None, help="checkpoint for --clipself-teacher given as an arch"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides of every cell (not right after --methods / --seeds, which take lists)",
    )
    return r


def sweep_parser() -> ToolParser:
    w = ToolParser(prog="methods.py sweep", description="evaluate a trained F-VLM-style cell at other a / b")
    w.add_argument("--output-dir", required=True)
    w.add_argument("--method", default="fvlm", help="a method with BASE_VLM_WEIGHT / NOVEL_VLM_WEIGHT")
    w.add_argument("--seeds", nargs="+", type=nonneg_int, default=None, help="default: every trained seed")
    w.add_argument("--pairs", nargs="+", default=None, metavar="A,B", help="default: SWEEP_PAIRS")
    w.add_argument("--no-progress", action="store_true", help="no progress bars")
    return w


def report_parser() -> ToolParser:
    q = ToolParser(prog="methods.py report", description="print the table of the finished cells")
    q.add_argument("--output-dir", required=True)
    q.add_argument("--json", action="store_true", help="the table as one JSON line")
    q.add_argument("--page", default=None, help="also write the table into this page's methods-table block")
    q.add_argument(
        "--json-out", default="docs/results/methods.json", help="with --page: the table's JSON file"
    )
    return q


@cli_entry
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = ToolParser(prog="methods.py", description=__doc__.split("\n")[0])
    top.add_argument(
        "command",
        choices=("run", "report", "sweep"),
        help="run: the cells not yet done; report: the table; sweep: F-VLM's ensemble weights",
    )
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("run", "report", "sweep"):
        top.parse_args(argv[:1])  # --help, or one line naming the commands
    if argv[0] == "report":
        return cmd_report(parse_args(report_parser(), argv[1:]))
    if argv[0] == "sweep":
        return cmd_sweep(parse_args(sweep_parser(), argv[1:]))
    args = parse_args(run_parser(), argv[1:])
    if len(args.overrides) % 2:
        raise DistillInputError("config overrides come in KEY VALUE pairs")
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
