import pytest

from ktedge.config import load_config

# A small but real run: every stage of the training recipe, on few faces, in seconds.
TINY = {
    "data": {"n_train": 480, "n_val": 120},
    "train": {"prior_epochs": 3, "canonical_epochs": 4, "adapter_epochs": 8, "batch_size": 32},
}


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(overrides=[TINY])


@pytest.fixture(scope="session")
def tiny_run(tiny_cfg, tmp_path_factory):
    """A trained tiny run directory, shared by the tests that need a checkpoint."""
    from ktedge.model.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    metrics = train(tiny_cfg, out)
    return out, metrics
