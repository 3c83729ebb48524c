"""One exception type for bad user input, and the command-line wrapper that turns it into one line."""

from __future__ import annotations

import functools
import math
import sys
from typing import Callable


class DistillInputError(Exception):
    """Bad input from the user (file, json, argument). Tools print it as one line and exit 2."""

    def __init__(self, message: str, path: str | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class TrainingInterrupted(KeyboardInterrupt):
    """A training loop stopped on SIGINT / SIGTERM after saving a checkpoint. Tools print the message (where the
    checkpoint is, how to continue) as one line and exit 128 + the signal's number, as a shell reports it. An
    interrupt, not an Exception: frameworks' `except Exception` (detectron2's trainer logs a traceback there)
    let it through."""

    def __init__(self, message: str, signum: int, hint: str | None = None):
        self.message, self.signum, self.hint = message, int(signum), hint
        self.exit_code = 128 + self.signum
        super().__init__(f"{message}; {hint}" if hint else message)

    def with_hint(self, hint: str) -> "TrainingInterrupted":
        """The same interruption, with another way to continue (a pipeline that resumes when rerun)."""
        return TrainingInterrupted(self.message, self.signum, hint if self.hint else None)


# the ranges a user's number is checked against: (test of a finite number, how the range reads)
RANGES = {
    "finite": (lambda v: True, "a finite number"),
    "positive": (lambda v: v > 0, "a number > 0"),
    "nonneg": (lambda v: v >= 0, "a number >= 0"),
    "unit": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}


def in_range(v, kind: str) -> bool:
    """`v` is a real number (not a bool), finite, and in RANGES[kind]."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and RANGES[kind][0](v)


def check_ranges(obj, positive=(), nonneg=(), unit=()) -> None:
    """Dataclass fields that must be finite numbers > 0, >= 0 or in [0, 1]: the first one out of range is one
    DistillInputError naming it (a 0-step schedule divides by zero later)."""
    for kind, names in (("positive", positive), ("nonneg", nonneg), ("unit", unit)):
        for name in names:
            v = getattr(obj, name)
            if not in_range(v, kind):
                raise DistillInputError(f"{name} must be {RANGES[kind][1]}, got {v!r}")


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a tool's main: input errors become `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return int(main(*args, **kwargs) or 0)
        except DistillInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a write path the tool did not wrap: still one line, not a traceback
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"error: {where}{e.strerror or e}", file=sys.stderr)
            return 2
        except TrainingInterrupted as e:
            print(f"interrupted: {e}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def check_checkpoint_fits(incompatible, fresh_prefixes: tuple[str, ...] = ()) -> list[str]:
    """fvcore/detectron2 `_load_model` result → one clear error when shapes differ or tensors are missing.
    Missing tensors under `fresh_prefixes` are allowed (they keep their initial values): returned."""
    fresh = [k for k in incompatible.missing_keys if k.startswith(fresh_prefixes)] if fresh_prefixes else []
    bad = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in incompatible.incorrect_shapes]
    bad += [f"{k} missing" for k in incompatible.missing_keys if k not in fresh]
    if bad:
        raise DistillInputError(
            f"checkpoint does not fit this model ({len(bad)} problem(s), e.g. {bad[0]}): "
            "another architecture or config?"
        )
    return fresh
