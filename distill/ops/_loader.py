"""The only place that loads the compiled extension `distill._C`.

Loading is lazy and happens once; afterwards `torch.ops.distill.*` exist and their Python-side
registrations (autograd formula, fake kernels) are in place.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings

REQUIRE_ENV = "DISTILL_REQUIRE_OPS"

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "error": None, "warned": False}


def _load_once() -> None:
    with _lock:
        if _state["tried"]:
            return
        _state["tried"] = True
        try:
            module = importlib.import_module("distill._C")
        except ImportError as exc:  # also covers undefined symbols from a torch version mismatch
            _state["error"] = exc
            return
        from . import _registrations

        _registrations.register()
        _state["module"] = module


def ops_available() -> bool:
    """True when the compiled ops are loaded (loads them on first call)."""
    if not _state["tried"]:
        _load_once()
    return _state["module"] is not None


def cuda_compiled() -> bool:
    """True when the loaded extension includes the CUDA kernels."""
    return ops_available() and bool(getattr(_state["module"], "WITH_CUDA", 0))


def missing_reason() -> str:
    return str(_state["error"]) if _state["error"] is not None else "distill._C was not built"


def require_or_warn() -> None:
    """Called on the fallback path: raises under DISTILL_REQUIRE_OPS=1, else warns once per process."""
    if os.environ.get(REQUIRE_ENV, "0") == "1":
        raise RuntimeError(
            f"distill.ops: the compiled extension is missing ({missing_reason()}) and {REQUIRE_ENV}=1. "
            "Rebuild with `pip install --no-build-isolation -e .` (see setup.py)."
        )
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"distill.ops: compiled extension unavailable ({missing_reason()}); using the slower "
            f"pure-PyTorch reference. Set {REQUIRE_ENV}=1 to make this an error.",
            RuntimeWarning,
            stacklevel=3,
        )
