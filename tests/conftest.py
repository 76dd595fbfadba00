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


TINY = ["debug=tiny"]  # conf/debug/tiny.yaml: generated data, a 3 x 32 MLP, probes every 4 steps
