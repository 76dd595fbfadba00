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


def pytest_collection_modifyitems(session, config, items):
    """Modules with the most end-to-end (``slow``) tests first, each module's tests kept together and
    in order: with two xdist workers, a multi-minute test started last would leave the other worker
    idle for minutes at the end of the suite."""
    slow = {}
    for item in items:
        slow[item.module.__name__] = slow.get(item.module.__name__, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.module.__name__])
