import pytest
from omegaconf.errors import ValidationError, ConfigKeyError
from hydra.errors import ConfigCompositionException

from initsuite.configure import CONF_DIR, compose


def test_bad_type_fails_at_compose_naming_the_key():
    with pytest.raises(Exception) as e:
        compose(["model.depth=ten"])
    text = f"{e.value} {e.value.__cause__}"
    assert "model.depth" in text and "ten" in text


def test_unknown_key_fails_at_compose():
    with pytest.raises(Exception) as e:
        compose(["model.dept=3"])
    assert "dept" in f"{e.value} {e.value.__cause__}"


def test_unknown_group_option_lists_choices():
    with pytest.raises(ConfigCompositionException) as e:
        compose(["init=xavier"])
    assert "glorot_uniform" in str(e.value)


GROUPS = ["dataset", "model", "init", "activation", "optimizer"]


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))])
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg[group].name  # each option says what it is


def test_public_keys_exist():
    cfg = compose([])
    for key in ["dataset.source", "dataset.path", "model.depth", "model.width", "optimizer.lr", "train.epochs",
                "train.batch_size", "train.max_steps", "seed", "probes.every", "probes.hist_steps",
                "probes.batch_size"]:
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert cfg.probes.batch_size == 300  # the paper's probe set
