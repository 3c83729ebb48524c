"""What every command-line tool shares: KEY VALUE overrides that mix with flags, image inputs, output paths
that never overwrite an input. No torch here: `--help` stays fast."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import DistillInputError
from .io import same_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def summary(doc: str) -> str:
    """A module docstring's first paragraph on one line (a tool's --help description)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


class ToolParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2 (the tools' promise), not the
    usage block argparse prints first."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(cast, ok, what: str):
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = what
    return parse


# argparse `type=`s: out-of-range numbers are argparse errors (one line, exit 2), not a crash later on
positive_int = _number(int, lambda v: v > 0, "an integer > 0")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
port_number = _number(int, lambda v: 0 < v < 65536, "a port number (1-65535)")


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.MAX_ITER 100 (flags may come before or after them)",
    )


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """parse_args that accepts flags after KEY VALUE overrides (an unknown flag is argparse's one-line error)."""
    return p.parse_intermixed_args(argv)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_checkpoint_path(spec: str) -> bool:
    """A teacher's --pretrained that names a file (not an open_clip tag or a model-zoo name)."""
    return os.path.sep in spec or spec.endswith(CHECKPOINT_SUFFIXES)


def checkpoint_path(spec: str | None) -> str | None:
    """`spec` when it names a checkpoint file (for check_inputs), else None."""
    return spec if spec and is_checkpoint_path(spec) else None


def check_inputs(*checks: tuple[str, str | None, str]) -> None:
    """(what, path, "file" | "dir") triples: the first given path that is not there is one clear error, "<what>
    not found". Tools call it before the heavy imports (torch and open_clip take seconds)."""
    for what, path, kind in checks:
        if path and not (os.path.isfile(path) if kind == "file" else os.path.isdir(path)):
            raise DistillInputError(f"{what} not found", path)


def list_images(spec: str | os.PathLike) -> list[Path]:
    """An image file, or the images of a folder (sorted); none is one clear error."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DistillInputError(f"no images in folder (looked for {', '.join(IMAGE_SUFFIXES)})", p)
        return files
    if not p.is_file():
        raise DistillInputError("input image not found", p)
    return [p]


def output_names(images: Sequence[Path], out_dir: Path, suffix: str = ".png") -> list[Path]:
    """OUT/<stem><suffix> per image (OUT/<name><suffix> where two images share a stem), refusing any that is
    one of the inputs: drawing into the input folder must not replace the user's images."""
    stems = [p.stem for p in images]
    outs = [
        out_dir / (f"{p.stem}{suffix}" if stems.count(p.stem) == 1 else f"{p.name}{suffix}") for p in images
    ]
    for o in outs:
        for i in images:
            if same_file(o, i):
                raise DistillInputError(
                    f"--output would overwrite the input image {i}; choose another folder", out_dir
                )
    return outs


class SkipList:
    """Inputs a folder run skipped, with why; `report()` lists them and gives the exit code."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, path, reason: str) -> None:
        self.items.append((str(path), reason))
        print(f"skipped {path}: {reason}", file=sys.stderr)

    def report(self, total: int) -> int:
        if not self.items:
            return 0
        print(
            f"error: skipped {len(self.items)} of {total} input(s): " + "; ".join(p for p, _ in self.items),
            file=sys.stderr,
        )
        return 2


def check_port_free(host: str, port: int) -> None:
    """A server's port must be free before it says "serving on": one clear error when another server (an
    earlier web demo?) holds it, or the host is not one of this machine's addresses."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise DistillInputError(f"--host {host!r} is not an address of this machine ({e})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for a server
        try:
            s.bind(addr)
        except OSError as e:
            raise DistillInputError(
                f"cannot serve on {host}:{port} ({e.strerror or e}): another server holds the port? "
                "pass --port"
            ) from None
