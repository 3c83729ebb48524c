"""Run a tool with --help, capture its argparse parsers; print which options lack help and whether torch loaded."""

import argparse
import json
import runpy
import sys
import time

tool = sys.argv[1]
found = {}
orig = {
    n: getattr(argparse.ArgumentParser, n)
    for n in ("parse_args", "parse_intermixed_args", "parse_known_args")
}


def grab(self, *a, **k):
    found.setdefault("parsers", []).append(self)
    raise SystemExit(0)


for n in orig:
    setattr(argparse.ArgumentParser, n, grab)
sys.argv = [tool, "--help"]
t = time.perf_counter()
try:
    runpy.run_path(tool, run_name="__main__")
except SystemExit:
    pass
missing = []
for p in found.get("parsers", []):
    for a in p._actions:
        if not isinstance(a, argparse._HelpAction) and not a.help:
            missing.append(a.dest)
print(
    json.dumps(
        {
            "tool": tool,
            "parsers": len(found.get("parsers", [])),
            "no_help": missing,
            "torch": "torch" in sys.modules,
            "s": round(time.perf_counter() - t, 2),
        }
    )
)
