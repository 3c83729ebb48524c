"""Package build, including the C++/CUDA ops extension `distill._C`.

The extension is optional at run time (distill.ops falls back to a pure-PyTorch reference), so a
failed compile only warns. CUDA sources are compiled when FORCE_CUDA=1 or a GPU is visible.
"""
import glob
import os
import shutil
import sys
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("distill", "csrc")


def _cuda_arch_default():
    """Arch list for builds without a visible GPU; CUDA 13 dropped sm_70/72, so it starts at sm_75."""
    from torch.utils.cpp_extension import CUDA_HOME

    version = _nvcc_major(CUDA_HOME)
    if version is not None and version >= 13:
        return "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    return "7.0;7.5;8.0;8.6;8.9;9.0+PTX"


def _nvcc_major(cuda_home):
    import re
    import subprocess

    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError, TypeError):
        return None
    match = re.search(r"release (\d+)\.", out)
    return int(match.group(1)) if match else None


def _extensions():
    """Returns (ext_modules, cmdclass); empty when torch's build helpers are unusable."""
    if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"  # torch's guess from PATH can be wrong
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as exc:  # noqa: BLE001 - any failure here only disables the extension
        warnings.warn(f"distill: not building the ops extension ({exc}); using the PyTorch reference",
                      stacklevel=1)
        return [], {}

    sources = [os.path.join(CSRC, "ops.cpp")] + sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]  # at::parallel_for's pragmas need it
    cxx = ["-O3", *openmp]
    use_cuda = CUDA_HOME is not None and (
        os.environ.get("FORCE_CUDA", "0") == "1" or torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", _cuda_arch_default())
        ext = CUDAExtension(
            "distill._C",
            sources + sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu"))),
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=openmp,
        )
    else:
        ext = CppExtension("distill._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=openmp)

    class OptionalBuildExtension(BuildExtension):
        """Warns instead of failing the install when the extension does not compile."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001
                _warn_build_failed(exc)

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:  # noqa: BLE001
                _warn_build_failed(exc)

    return [ext], {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}


def _warn_build_failed(exc):
    msg = (f"distill: building the ops extension failed ({exc}); distill.ops will use the slower "
           "PyTorch reference. Set DISTILL_REQUIRE_OPS=1 to make that an error at run time.")
    warnings.warn(msg, stacklevel=1)
    print(f"WARNING: {msg}", file=sys.stderr)


def _ship_configs():
    """configs/ inside the package as distill/model_zoo/configs (a link; a copy where links fail), so an
    installed distill finds the configs its library functions default to (detectron2's model_zoo does so)."""
    source = os.path.join(ROOT, "configs")
    target = os.path.join(ROOT, "distill", "model_zoo", "configs")
    if not os.path.isdir(source):  # building from an sdist: the copy is already inside the package
        return
    if os.path.islink(target):
        os.unlink(target)
    elif os.path.isdir(target):
        shutil.rmtree(target)
    try:
        os.symlink(os.path.join("..", "..", "configs"), target)
    except OSError:
        shutil.copytree(source, target)


_ship_configs()
ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
