"""Start-up time of the tools: how long a config-key typo, a missing weights file and a one-image demo take,
start to finish, with and without bytecode, for this checkout and a baseline checkout. Prints medians and the
ratios baseline / this checkout.

    python benchmarks/startup.py --weights output/quickstart/vild/model_final.pth \
        --baseline-root /tmp/base [--pycache-prefix DIR] [--repeats 3]

`--baseline-root`: another checkout of the project (e.g. `git worktree add /tmp/base <revision>`), run with the
same Python. Each command is a fresh process with PYTHONDONTWRITEBYTECODE=1 (so no run leaves bytecode for the
next) and PYTHONPATH set to the checkout. Two bytecode conditions:
  none      a PYTHONPYCACHEPREFIX holding the standard library's bytecode only: every other module compiled
            from source at every start (what an install with `pip install --no-compile` gives when
            PYTHONDONTWRITEBYTECODE=1 is set, as in many containers)
  compiled  the bytecode `make install` writes (`python -m compileall`), or the one under --pycache-prefix (a
            `PYTHONPYCACHEPREFIX=DIR python -m compileall ...` made without touching the environment; the
            standard library's is compiled into it too)
The commands run in --cwd (default: here), where the config's relative paths (output/quickstart/...) resolve.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def commands(root: Path, weights: str, image: str, out: str, missing: str) -> dict[str, list[str]]:
    """name → argv; the configs and tools are the checkout's own."""
    cfg = str(root / "configs/synthetic/vild_r18_fpn_quick.yaml")
    tool = lambda name: [sys.executable, str(root / "tools" / name)]  # noqa: E731
    io = ["--input", image, "--output", out]
    typo = ["SOLVER.MAX_ITERS", "3"]
    return {
        "typo train_net": [*tool("train_net.py"), "--config-file", cfg, "--backend", "torchvision", *typo],
        "typo demo": [*tool("demo.py"), "--config-file", cfg, "--weights", weights, *io, *typo],
        "typo export_model": [
            *tool("export_model.py"),
            *("--config-file", cfg, "--weights", weights, "--vocabulary", "synthetic", "--output", out),
            *typo,
        ],
        "missing gt evaluate": [*tool("evaluate.py"), "--gt", missing + ".json", "--predictions", missing],
        "missing weights demo": [*tool("demo.py"), "--config-file", cfg, "--weights", missing, *io],
        "missing weights export_model": [
            *tool("export_model.py"),
            *("--config-file", cfg, "--weights", missing, "--vocabulary", "synthetic", "--output", out),
        ],
        "missing weights train_net": [
            *tool("train_net.py"),
            *("--config-file", cfg, "--eval-only", "MODEL.WEIGHTS", missing),
        ],
        "one-image demo": [*tool("demo.py"), "--config-file", cfg, "--weights", weights, *io],
    }


def run_once(argv: list[str], env: dict, cwd: str, expect_ok: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process): on a busy machine the CPU time is the steadier of the two."""
    c0, t = _child_cpu(), time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    wall, cpu = time.perf_counter() - t, _child_cpu() - c0
    if (r.returncode == 0) != expect_ok:
        raise SystemExit(f"unexpected exit {r.returncode} of {' '.join(argv)}:\n{r.stderr[-1500:]}")
    return wall, cpu


def _child_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def environment(root: Path, bytecode: str, prefix: str | None, stdlib_only: str) -> dict:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "none":
        env["PYTHONPYCACHEPREFIX"] = stdlib_only
    elif prefix:
        env["PYTHONPYCACHEPREFIX"] = prefix
    return env


def compile_stdlib(prefix: str) -> None:
    """The standard library's bytecode under `prefix` (a Python install ships it; a prefix hides it)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    env = {**os.environ, "PYTHONPYCACHEPREFIX": prefix}
    exclude = ["-x", "/(tests?|idlelib|turtledemo|lib2to3|site-packages)/"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", *exclude, stdlib], env=env, check=False)


def has_bytecode(prefix: str | None) -> bool:
    """torch's __init__ has bytecode where the `compiled` condition looks for it."""
    src = importlib.util.find_spec("torch").origin
    saved, sys.pycache_prefix = sys.pycache_prefix, prefix
    try:
        return Path(importlib.util.cache_from_source(src)).is_file()
    finally:
        sys.pycache_prefix = saved


def main() -> int:
    p = argparse.ArgumentParser(description="start-up time of the tools, with and without bytecode")
    p.add_argument(
        "--weights",
        required=True,
        help="a detector of configs/synthetic/vild_r18_fpn_quick.yaml (the quickstart's; how well it is "
        "trained does not change the timing)",
    )
    p.add_argument("--baseline-root", help="a checkout of the baseline revision (omit: this checkout only)")
    p.add_argument("--pycache-prefix", help="where the compiled bytecode is (default: the environment's own)")
    p.add_argument("--repeats", type=int, default=3, help="runs per command and condition (median)")
    p.add_argument("--cwd", default=os.getcwd(), help="where the commands run")
    p.add_argument("--only", nargs="*", default=None, help="command names to run (default: all)")
    args = p.parse_args()
    if not has_bytecode(args.pycache_prefix):
        print("note: no bytecode found for torch: the 'compiled' condition compiles at every start too")
    weights = str(Path(args.weights).resolve())
    roots = {"this": HERE} | ({"baseline": Path(args.baseline_root).resolve()} if args.baseline_root else {})
    results: dict[tuple[str, str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        image = str(Path(tmp) / "image.png")
        _write_image(image)
        # no bytecode but the standard library's: PYTHONDONTWRITEBYTECODE=1 keeps this folder as it is
        stdlib_only = str(Path(tmp) / "stdlib_only")
        for prefix in (stdlib_only, args.pycache_prefix):
            if prefix:
                compile_stdlib(prefix)
        for name, root in roots.items():
            for bytecode in ("none", "compiled"):
                cmds = commands(root, weights, image, str(Path(tmp) / "out"), tmp + "/missing.pth")
                for cmd, argv in cmds.items():
                    if args.only and cmd not in args.only:
                        continue
                    runs = []
                    for _ in range(args.repeats):
                        env = environment(root, bytecode, args.pycache_prefix, stdlib_only)
                        runs.append(run_once(argv, env, args.cwd, cmd == "one-image demo"))
                    wall, cpu = (statistics.median(x) for x in zip(*runs))
                    results[name, bytecode, cmd] = wall, cpu
                    print(
                        f"{name:8s} {bytecode:8s} {cmd:30s} {wall:6.2f} s wall {cpu:6.2f} s CPU", flush=True
                    )
    report(results, args.baseline_root is not None)
    return 0


def _write_image(path: str) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)


def report(results: dict, baseline: bool) -> None:
    """A markdown table of wall (CPU) seconds, and the ratio the start-up work is judged by."""
    cmds = list(dict.fromkeys(c for _, _, c in results))
    cols = ["command", "this, no bytecode", "this, compiled"]
    if baseline:
        cols += ["baseline, no bytecode", "baseline, compiled", "baseline no bytecode / this compiled"]
    print("\nseconds, wall (CPU), medians\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    cell = lambda r: f"{r[0]:.2f} ({r[1]:.2f})"  # noqa: E731
    for c in cmds:
        row = [cell(results["this", b, c]) for b in ("none", "compiled")]
        if baseline:
            row += [cell(results["baseline", b, c]) for b in ("none", "compiled")]
            old, new = results["baseline", "none", c], results["this", "compiled", c]
            row.append(f"{old[0] / new[0]:.1f}x ({old[1] / new[1]:.1f}x)")
        print(f"| {c} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
