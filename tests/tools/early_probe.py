"""Run a tool with the given arguments; print its exit code and whether torch (or Gradio) got imported, as json.
Errors that need no model must come before those imports (they take seconds)."""

import json
import runpy
import sys

tool, argv = sys.argv[1], sys.argv[2:]
sys.argv = [tool, *argv]
code = 0
try:
    runpy.run_path(tool, run_name="__main__")
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
heavy = [m for m in ("torch", "torchvision", "open_clip", "gradio") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
