"""MkDocs hook: the site's pages laid out as in the repository.

The pages live where GitHub shows them: README.md, INSTALL.md, GETTING_STARTED.md, ... at the repository root,
the rest under docs/. MkDocs reads one folder (docs_dir), so this hook replaces its file list with the pages at
their repository paths (README.md becomes the site's index): a relative link such as `docs/benchmarks.md` from
README.md or `../INSTALL.md` from docs/benchmarks.md then resolves the same on GitHub and in the site.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
# pages and pictures outside docs/ that the site shows
ROOT_FILES = (
    "README.md",
    "INSTALL.md",
    "GETTING_STARTED.md",
    "ARCHITECTURE.md",
    "MODEL_ZOO.md",
    "CHANGELOG.md",
    "datasets/README.md",
    "tools/web_demo.png",
)


def _docs_files() -> list[str]:
    """Repository paths of everything under docs/ but this hook's folder."""
    docs = REPO / "docs"
    return sorted(
        p.relative_to(REPO).as_posix()
        for p in docs.rglob("*")
        if p.is_file() and "hooks" not in p.relative_to(docs).parts and "__pycache__" not in p.parts
    )


def on_files(files: Files, config) -> Files:
    """Every page and picture at its repository path; the theme's and the plugins' assets kept as they are."""
    docs_dir = Path(config["docs_dir"]).resolve()
    kept = [
        f for f in files if not f.abs_src_path or not Path(f.abs_src_path).resolve().is_relative_to(docs_dir)
    ]
    for rel in (*ROOT_FILES, *_docs_files()):
        path = REPO / rel
        if not path.is_file():  # a missing page is reported by the nav and link checks, by name
            continue
        kept.append(File.generated(config, rel, abs_src_path=str(path)))
    return Files(kept)
