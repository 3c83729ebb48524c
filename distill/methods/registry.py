"""The method registry, torch-free (config loading reads it before any heavy import).

A method is registered under a name (the value of MODEL.DISTILL.METHOD) with its config keys: each `Key` holds a
default and a valid range once, under the method's node MODEL.DISTILL.<NODE> (several methods may share a node,
as the three ViLD variants share VILD). Built-in methods register lazily ("module:Class"); a user's module
registers its class with the `register_method` decorator and is imported through MODEL.DISTILL.IMPORTS or the
`distill.methods` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from ..utils.errors import RANGES, DistillInputError, in_range

ENTRY_POINT_GROUP = "distill.methods"


@dataclass(frozen=True)
class Key:
    """One config key of a method: its default, its valid range (a `distill.utils.errors.RANGES` kind), or the
    values it may take, and one line of documentation."""

    default: Any
    range: str | None = None
    choices: tuple | None = None
    doc: str = ""

    def check(self, name: str, value) -> None:
        if self.range is not None and not in_range(value, self.range):
            raise DistillInputError(f"config value {name} = {value!r}: must be {RANGES[self.range][1]}")
        if self.choices is not None and value not in self.choices:
            raise DistillInputError(f"config value {name} = {value!r}: must be one of {list(self.choices)}")


@dataclass
class MethodEntry:
    """A registered method: `target` is its class, or "module:Class" loaded on first use."""

    name: str
    node: str
    keys: dict[str, Key]
    target: type | str
    summary: str = ""
    origin: str = field(default="", compare=False)

    def load(self) -> type:
        if isinstance(self.target, str):
            module, cls = self.target.split(":")
            self.target = getattr(importlib.import_module(module), cls)
        return self.target


_METHODS: dict[str, MethodEntry] = {}


def _origin(obj) -> str:
    if isinstance(obj, str):
        return obj
    try:
        return f"{inspect.getsourcefile(obj)}:{obj.__qualname__}"
    except TypeError:
        return f"{obj.__module__}:{obj.__qualname__}"


def _add(entry: MethodEntry) -> None:
    entry.origin = _origin(entry.target)
    old = _METHODS.get(entry.name)
    if old is not None and old.origin != entry.origin:
        raise DistillInputError(
            f"distillation method {entry.name!r} is registered twice ({old.origin} and {entry.origin})"
        )
    for other in _METHODS.values():  # a node shared by several methods: the same keys mean the same thing
        if other.node != entry.node or other.name == entry.name:
            continue
        for k in set(other.keys) & set(entry.keys):
            if other.keys[k].default != entry.keys[k].default:
                raise DistillInputError(
                    f"method {entry.name!r} gives MODEL.DISTILL.{entry.node}.{k} the default "
                    f"{entry.keys[k].default!r}; method {other.name!r} gives it {other.keys[k].default!r}"
                )
    _METHODS[entry.name] = entry


def register_method(name: str, *, node: str | None = None, keys: dict[str, Key] | None = None, summary=""):
    """Class decorator: register a `DistillMethod` subclass as MODEL.DISTILL.METHOD `name`. Its config keys are
    `keys` (default: the class's `config_keys`) under MODEL.DISTILL.`node` (default: the class's `config_node`,
    else the name in capitals)."""

    def deco(cls: type) -> type:
        n = node or getattr(cls, "config_node", None) or name.upper()
        k = dict(getattr(cls, "config_keys", {}) if keys is None else keys)
        doc = summary or (inspect.getdoc(cls) or "").split("\n")[0]
        _add(MethodEntry(name, n, k, cls, doc))
        cls.config_node, cls.config_keys = n, k  # what the method reads its options by
        return cls

    return deco


def unregister_method(name: str) -> None:
    """Forget a registered method (a notebook's re-definition, a test's clean-up); its config node stays in
    configs already made."""
    _METHODS.pop(name, None)


def register_lazy(name: str, target: str, node: str, keys: dict[str, Key], summary: str = "") -> None:
    """Register a method whose class is imported on first use ("module:Class")."""
    _add(MethodEntry(name, node, dict(keys), target, summary))


def method_names() -> list[str]:
    _load_entry_points()
    return sorted(_METHODS)


def method_entries() -> list[MethodEntry]:
    return [_METHODS[n] for n in method_names()]


def get_method_entry(name: str) -> MethodEntry:
    """The entry of MODEL.DISTILL.METHOD `name`; an unknown name is one clear error listing the known ones."""
    if name not in _METHODS:
        _load_entry_points()
    if name not in _METHODS:
        raise DistillInputError(
            f"unknown distillation method MODEL.DISTILL.METHOD {name!r}; known: {', '.join(sorted(_METHODS))} "
            "(a method of your own: name its module in MODEL.DISTILL.IMPORTS)"
        )
    return _METHODS[name]


_ENTRY_POINTS_LOADED = [False]


def _load_entry_points() -> None:
    """Methods of installed packages that declare the `distill.methods` entry-point group."""
    if _ENTRY_POINTS_LOADED[0]:
        return
    _ENTRY_POINTS_LOADED[0] = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in is one line, not a traceback
            raise DistillInputError(
                f"cannot load the distillation method plug-in {ep.value!r} ({e})"
            ) from None


def import_module(spec: str, relative_to: str | None = None) -> None:
    """Import a module named in MODEL.DISTILL.IMPORTS: a dotted module name, or a .py file (a relative path is
    tried against the config file's folder, then the working directory). Its `register_method` calls run."""
    if spec.endswith(".py"):
        path = spec
        if not os.path.isabs(path) and relative_to and os.path.isfile(os.path.join(relative_to, path)):
            path = os.path.join(relative_to, path)
        if not os.path.isfile(path):
            raise DistillInputError("MODEL.DISTILL.IMPORTS: file not found", spec)
        path = os.path.realpath(path)
        name = "distill_user_" + "".join(c if c.isalnum() else "_" for c in path)
        if name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            raise
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            raise DistillInputError(
                f"MODEL.DISTILL.IMPORTS: no module named {spec!r} (is its folder on PYTHONPATH?)"
            ) from None
        raise


def import_modules(specs, relative_to: str | None = None, importer: Callable = import_module) -> None:
    for spec in specs or ():
        importer(str(spec), relative_to)
