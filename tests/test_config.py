import pytest
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


def test_schema_defaults_are_the_composed_defaults():
    """One truth: conf/config.yaml's defaults list composes to exactly the schema's defaults."""
    from omegaconf import OmegaConf

    from initsuite.config import Config

    composed = OmegaConf.to_container(compose([]), resolve=False)
    schema = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    assert composed == schema


def test_a_preset_and_the_debug_scale_need_no_plus():
    cfg = compose(["experiment=smoke"])
    assert cfg.experiment == "smoke" and cfg.dataset.name == "synthetic"  # smoke uses debug=tiny
    tiny = compose(["debug=tiny"])
    assert (tiny.dataset.name, tiny.model.depth, tiny.model.width, tiny.dataset.n_train) == ("synthetic", 3, 32, 256)
    # the debug scale wins over a preset's sizes, the command line over both
    both = compose(["experiment=default", "debug=tiny", "model.width=8"])
    assert (both.experiment, both.dataset.name, both.model.width, both.train.eval_every) == ("default", "synthetic",
                                                                                             8, 50)


def test_every_statistic_in_the_step_with_xla_fails_before_training_naming_both_keys():
    from initsuite.config import ConfigError, check

    cfg = compose(["probes.train_quantiles=true", "train.jit_compile=true"])
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert "probes.train_quantiles" in str(e.value) and "train.jit_compile=false" in str(e.value)
    check(compose(["probes.train_quantiles=true"]))  # without XLA it passes
