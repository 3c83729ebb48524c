"""Build checks for the ops extension.

    python -m distill.ops.build cuda-check

compiles the CUDA sources (distill/csrc/cuda/*.cu) with nvcc to object files in a temporary folder,
with torch's include paths and flags, for sm_75 and sm_90 (CUDA 13 dropped sm_70/72; older toolkits
also get sm_70). Nothing runs them: it only proves the kernels compile on machines without a GPU.
Exits 0 with a notice when nvcc is absent, non-zero when compilation fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def find_nvcc() -> str | None:
    """nvcc under $CUDA_HOME, else /usr/local/cuda, else on PATH."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_major(nvcc: str) -> int:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"release (\d+)\.", out)
    if not match:
        raise RuntimeError(f"cannot parse `{nvcc} --version`: {out!r}")
    return int(match.group(1))


def target_archs(major: int) -> list[str]:
    return ["75", "90"] if major >= 13 else ["70", "75", "90"]


def nvcc_command(nvcc: str, source: Path, output: Path, archs: list[str]) -> list[str]:
    """The nvcc line torch.utils.cpp_extension would use for this source, compile-only."""
    cuda_home = str(Path(nvcc).resolve().parent.parent)
    os.environ.setdefault("CUDA_HOME", cuda_home)  # torch's own guess can be wrong (DESIGN.md section 6)
    import torch
    from torch.utils import cpp_extension

    includes = [
        *cpp_extension.include_paths(),
        os.path.join(cuda_home, "include"),
        sysconfig.get_paths()["include"],
    ]
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 1))
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [
        nvcc,
        "-c",
        str(source),
        "-o",
        str(output),
        "-std=c++20",
        "-O3",
        "--threads",
        "2",
        "-Xcompiler",
        "-fPIC",
        *cpp_extension.COMMON_NVCC_FLAGS,
        *gencode,
        "-DWITH_CUDA",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *[f"-I{p}" for p in includes],
    ]


def cuda_check() -> int:
    nvcc = find_nvcc()
    if nvcc is None:
        print("cuda-check: SKIPPED, nvcc not found (set CUDA_HOME); the CUDA kernels were not compiled.")
        return 0
    archs = target_archs(nvcc_major(nvcc))
    sources = sorted((CSRC / "cuda").glob("*.cu"))
    if not sources:
        print(f"cuda-check: FAILED, no CUDA sources under {CSRC / 'cuda'}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distill-cuda-check-") as tmp:
        for source in sources:
            cmd = nvcc_command(nvcc, source, Path(tmp) / (source.stem + ".o"), archs)
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                print(
                    f"cuda-check: FAILED to compile {source}\n$ {' '.join(cmd)}\n{result.stdout}"
                    f"{result.stderr}",
                    file=sys.stderr,
                )
                return 1
    print(
        f"cuda-check: OK, compiled {len(sources)} CUDA source(s) with {nvcc} for "
        f"{', '.join('sm_' + a for a in archs)} in {time.perf_counter() - start:.0f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.ops.build", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["cuda-check"])
    parser.parse_args(argv)
    return cuda_check()


if __name__ == "__main__":
    sys.exit(main())
