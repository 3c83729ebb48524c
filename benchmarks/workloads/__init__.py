"""What the benchmarks run and the tests check them on, kept out of the installed package (no user runs them):
`recipes` (the OV-COCO / OV-LVIS recipes of GETTING_STARTED.md as command lines, for
benchmarks/recipe_rehearsal.py and tests/recipes) and `eval_loads` (deterministic LVIS- and COCO-shaped
evaluation loads, for benchmarks/evaluation_scale.py and tests/evaluation) and `train_steps` (one training step's
batch and its timing, for benchmarks/fvlm_step.py and benchmarks/baron_step.py).

A benchmark imports them as `workloads.<name>` (its own folder is first on the module search path), a test as
`benchmarks.workloads.<name>` (the repository root is); neither imports the other's helpers.
"""
