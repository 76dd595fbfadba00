import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real Hydra config with overrides, writing results under tmp_path."""
    from initsuite.configure import compose

    def _make(*overrides):
        return compose([f"paths.results={tmp_path}/results", "train.progress=false", *overrides])

    return _make


TINY = [
    "dataset=synthetic",
    "dataset.n_train=256",
    "dataset.n_test=64",
    "dataset.n_valid=64",
    "model.depth=3",
    "model.width=32",
    "train.batch_size=32",
    "probes.every=4",
    "probes.batch_size=64",
]
