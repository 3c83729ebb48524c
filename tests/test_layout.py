"""The repository's layout rules that import-linter (pyproject.toml, `make test`) cannot see: tools and
benchmarks import the package, never each other (benchmarks also their own benchmarks/workloads, which neither
the package nor a tool imports), and nothing edits the module search path; configs ship with the package."""

import ast

import pytest

from distill.model_zoo import get_config_file
from distill.utils import DistillInputError
from tests.conftest import REPO

SCRIPTS = sorted([*REPO.glob("tools/*.py"), *REPO.glob("benchmarks/*.py")])
SCRIPT_NAMES = {p.stem for p in SCRIPTS}


def imported_names(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_import_only_the_package(path):
    assert not set(imported_names(path)) & SCRIPT_NAMES


def test_benchmark_workloads_stay_out_of_the_package_and_the_tools():
    """benchmarks/workloads (what benchmarks run and tests check them on) is not installed: nothing a user runs
    may import it."""
    files = [*(REPO / "distill").rglob("*.py"), *REPO.glob("tools/*.py")]
    offenders = [
        str(p.relative_to(REPO)) for p in files if {"workloads", "benchmarks"} & set(imported_names(p))
    ]
    assert offenders == []
    assert (
        not (REPO / "distill" / "recipes.py").exists() and not (REPO / "distill/data/eval_loads.py").exists()
    )


def test_nothing_edits_the_module_search_path():
    files = [p for d in ("distill", "tools", "tests", "benchmarks") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 50
    offenders = [str(p.relative_to(REPO)) for p in files if "sys." + "path" in p.read_text()]
    assert offenders == []


def test_configs_ship_with_the_package():
    for name in ("synthetic/vild_r18_fpn_quick.yaml", "synthetic/semseg_r18_fpn_quick.yaml"):
        path = get_config_file(name)
        assert path.endswith(name) and "model_zoo" in path
        assert open(path).read() == (REPO / "configs" / name).read_text()
    with pytest.raises(DistillInputError, match="vild_r18_fpn_quick.yaml"):
        get_config_file("synthetic/nope.yaml")


def test_architecture_lists_every_tool():
    text = (REPO / "ARCHITECTURE.md").read_text()
    section = text[text.index("## Tools") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    missing = [p.name for p in sorted(REPO.glob("tools/*.py")) if f"`{p.name}`" not in section]
    assert missing == [], f"ARCHITECTURE.md's Tools section misses {missing}"
