import pytest
import torch


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A seeded, randomly initialised tiny teacher saved as a checkpoint (deterministic across processes)."""
    import open_clip

    from distill.teacher.teacher import _register_model_configs

    _register_model_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("distill-tiny-vit")
    path = tmp_path_factory.mktemp("teacher") / "tiny_random.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tiny_weights):
    from distill.teacher import create_teacher

    return create_teacher("distill-tiny-vit", str(tiny_weights))
