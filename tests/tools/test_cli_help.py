"""Every tool: `--help` works without importing torch (it takes seconds: the help must not), and every option
has help text."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO

TOOLS = sorted(p.name for p in (REPO / "tools").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("tool", TOOLS)
def test_help_is_light_and_complete(tool):
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/tools/help_probe.py"), str(REPO / "tools" / tool)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["parsers"] >= 1
    assert info["no_help"] == [], f"{tool}: options without help: {info['no_help']}"
    assert not info["torch"], f"{tool} --help imports torch"


def test_synthetic_generator_options_have_help(capsys):
    from distill.data.synthetic import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--num-train" in out and "SyntheticConfig.num_train" in out


def test_flags_after_overrides_are_accepted():
    import runpy

    from distill.utils.cli import parse_args

    train_net = SimpleNamespace(**runpy.run_path(str(REPO / "tools/train_net.py")))

    args = parse_args(
        train_net.default_argument_parser(),
        ["--config-file", "x.yaml", "SOLVER.MAX_ITER", "10", "--resume", "SEED", "-1", "--eval-only"],
    )
    assert args.resume and args.eval_only and args.opts == ["SOLVER.MAX_ITER", "10", "SEED", "-1"]
    with pytest.raises(SystemExit):
        parse_args(train_net.default_argument_parser(), ["SOLVER.MAX_ITER", "10", "--no-such-flag"])


@pytest.mark.parametrize("tool", ["demo.py", "export_proposals.py"])
def test_backend_auto_is_described_alike_in_help_and_getting_started(tool, capsys):
    """`--backend auto` in --help and in GETTING_STARTED.md say what backend_name_for does, in the same words."""
    import runpy

    from distill.integrations.backend import AUTO_WITH_CHECKPOINT

    main = runpy.run_path(str(REPO / "tools" / tool))["main"]
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    page = " ".join((REPO / "GETTING_STARTED.md").read_text().split())
    assert AUTO_WITH_CHECKPOINT in help_text and AUTO_WITH_CHECKPOINT in page
