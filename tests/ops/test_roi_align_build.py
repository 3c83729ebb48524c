"""`python -m distill.ops.build cuda-check` without nvcc: a visible skip notice and exit code 0."""

from distill.ops import build


def test_cuda_check_skips_without_nvcc(monkeypatch, capsys):
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    assert build.main(["cuda-check"]) == 0
    assert "SKIPPED" in capsys.readouterr().out


def test_cuda_archs_follow_the_toolkit():
    assert build.target_archs(13) == ["75", "90"]  # CUDA 13 dropped sm_70/72
    assert "70" in build.target_archs(12)


def test_nvcc_command_uses_torch_includes(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    cmd = build.nvcc_command("/usr/local/cuda/bin/nvcc", tmp_path / "k.cu", tmp_path / "k.o", ["75", "90"])
    assert "-c" in cmd and "-gencode=arch=compute_90,code=sm_90" in cmd
    assert any(arg.startswith("-I") and arg.endswith("include") for arg in cmd)
