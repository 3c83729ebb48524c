"""A real teacher's weights missing without network: one line naming the cache path and the source, exit 2, in
seconds (the hub's retries took a minute and ended in three tracebacks)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.teacher.conftest import tiny_weights  # noqa: F401  (fixture)

# the import of torch and open_clip is not what is timed: the child says "ready" after it
CHILD = """
import runpy, sys
import open_clip, torch
import distill.teacher.teacher
print("ready", flush=True)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
SECONDS = 15  # the fixed path takes well under a second after the imports


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in PROXIES and not k.startswith(("HF_", "DISTILL_"))}
    return {
        **env,
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp_path / "home"),  # open_clip's url cache ~/.cache/clip: empty
        "HF_HOME": str(tmp_path / "hf"),
        "DISTILL_CACHE": str(tmp_path / "distill_cache"),
        **extra,
    }


def _run_timed(args, env, cwd):
    """(returncode, stderr) of a tool run in a child; fails when the tool takes over SECONDS after its imports."""
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        try:
            _, err = p.communicate(timeout=SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still trying to download after {SECONDS} s")
        return p.returncode, err
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize(
    "extra",
    [{"DISTILL_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["DISTILL_OFFLINE", "unreachable-hub"],
)
def test_missing_real_teacher_is_one_line_at_once(tmp_path, extra):
    out = tmp_path / "pets.npy"
    args = [REPO / "tools/dump_text_embeddings.py", "--teacher", "ViT-B-32", "--pretrained", "openai"]
    rc, err = _run_timed(
        [*args, "--vocabulary", "cat,dog", "--output", out], _env(tmp_path, **extra), tmp_path
    )
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ViT-B-32/openai: weights not in the cache"), line
    assert str(tmp_path / "hf" / "hub" / "models--timm--vit_base_patch32_clip_224.openai") in line
    assert "timm/vit_base_patch32_clip_224.openai" in line.split("they come from")[1]
    assert not out.exists()


def test_prefetch_tool_offline_is_one_line(tmp_path):
    args = [REPO / "tools/download_model.py", "ViT-B-32/openai"]
    rc, err = _run_timed(args, _env(tmp_path, DISTILL_OFFLINE="1"), tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "weights not in the cache" in err, err


def _fake_hub_file(hub, repo, filename, revision="0123abcd"):
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    path = folder / "snapshots" / revision / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return path


def test_weights_source_finds_the_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from distill.teacher.pretrained import check_weights_available, weights_source

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("DISTILL_OFFLINE", "1")
    src = weights_source("ViT-B-32", "openai")
    assert src.cached is None and src.expected.startswith(str(tmp_path))
    # open_clip prefers the .safetensors twin of its default .bin: either counts
    path = _fake_hub_file(tmp_path, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    assert check_weights_available("ViT-B-32", "openai").cached == str(path)


def test_weights_source_url_cache_without_the_hub(tmp_path, monkeypatch):
    import open_clip.pretrained

    from distill.teacher.pretrained import WeightsUnavailable, check_weights_available

    monkeypatch.setattr(open_clip.pretrained, "has_hf_hub", lambda necessary=False: False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DISTILL_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match=r"clip/ViT-B-32\.pt\); they come from https://openaipublic"):
        check_weights_available("ViT-B-32", "openai")
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "ViT-B-32.pt").write_bytes(b"weights")
    assert check_weights_available("ViT-B-32", "openai").cached.endswith("ViT-B-32.pt")


def test_distill_offline_reaches_the_hub(monkeypatch):
    from huggingface_hub import constants

    from distill.teacher.pretrained import sync_offline_env

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setenv("DISTILL_OFFLINE", "1")
    sync_offline_env()
    assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_cached_weights_load_without_asking_the_hub(tmp_path, monkeypatch):
    """A cached file is used as is: no update check, so no retries on a machine without network."""
    from huggingface_hub import constants
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    from distill.teacher.pretrained import hub_offline

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    path = _fake_hub_file(tmp_path, "timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin")
    with hub_offline():
        assert download_pretrained(get_pretrained_cfg("ViT-B-32", "openai")) == str(path)
    assert not constants.HF_HUB_OFFLINE


def test_config_vocabulary_of_a_missing_teacher_is_one_line(tmp_path, monkeypatch):
    """The demo's, web demo's and export's path: names encoded by the config's teacher."""
    from huggingface_hub import constants

    from distill.teacher.pretrained import WeightsUnavailable
    from distill.teacher.vocabulary import vocabulary_embeddings

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "distill"))
    monkeypatch.setenv("DISTILL_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "")  # both restored after the test (create_teacher sets them)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsUnavailable, match=r"^ViT-B-32/openai: weights not in the cache \(") as e:
        vocabulary_embeddings(["cat", "dog"], "ViT-B-32", "openai", "vild")
    assert "\n" not in str(e.value)


def test_architecture_needing_transformers_is_one_line(tiny_weights, monkeypatch):  # noqa: F811
    """SigLIP's tokenizer and the HF text towers import transformers (not a dependency): one line, not a
    traceback."""
    import open_clip

    from distill.teacher import create_teacher
    from distill.utils.errors import DistillInputError

    def needs_transformers(arch):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(open_clip, "get_tokenizer", needs_transformers)
    with pytest.raises(DistillInputError, match="needs the Python package 'transformers' \\(pip install"):
        create_teacher("distill-tiny-vit", str(tiny_weights))
