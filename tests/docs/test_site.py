"""The documentation site builds in strict mode, and strict mode catches what it is there for: a broken link or
anchor, a nav entry without its page, a docstring whose Args name a parameter the signature lacks."""

from __future__ import annotations

import re

from tests.conftest import REPO

from .site import build_site, copy_site_sources


def test_site_builds_strict(tmp_path):
    r = build_site(REPO, tmp_path / "site")
    assert r.returncode == 0, r.stderr[-3000:]
    for page in (
        "index.html",
        "INSTALL.html",
        "GETTING_STARTED.html",
        "docs/benchmarks.html",
        "docs/api.html",
    ):
        assert (tmp_path / "site" / page).is_file(), page
    # the API reference is generated, not the raw `::: module` lines GitHub shows
    api = (tmp_path / "site/docs/api/methods.html").read_text()
    assert ":::" not in api and "register_method" in api and "doc-signature" in api


def test_broken_link_anchor_page_and_docstring_fail_the_build(tmp_path):
    root = copy_site_sources(tmp_path / "repo")
    with open(root / "README.md", "a") as f:
        f.write("\n[a](docs/no_such_page.md) [b](INSTALL.md#no-such-anchor)\n")
    (root / "docs/teacher.md").unlink()  # in the nav
    (root / "docsprobe.py").write_text(
        'def probe(a: int) -> int:\n    """Probe.\n\n    Args:\n        b: not a parameter.\n    """\n    return a\n'
    )
    with open(root / "docs/api.md", "a") as f:
        f.write("\n::: docsprobe.probe\n")
    r = build_site(root, tmp_path / "site")
    log = r.stdout + r.stderr
    assert r.returncode != 0
    assert "'docs/no_such_page.md'" in log
    assert "'#no-such-anchor'" in log
    assert re.search(r"'docs/teacher\.md'.*not found", log)
    assert "Parameter 'b' does not appear in the function signature" in log


def test_the_readme_stays_a_front_door():
    """At most ~120 lines, and the tasks a newcomer comes with are one link away."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    links = set(re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text))
    for page in ("INSTALL.md", "GETTING_STARTED.md", "docs/extend.md", "docs/benchmarks.md", "MODEL_ZOO.md"):
        assert page in links, page
    for anchor in ("#the-quickstart", "#your-own-classes-on-your-own-images", "#your-own-dataset"):
        assert f"GETTING_STARTED.md{anchor})" in text, anchor
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "a commit hash in the README"
