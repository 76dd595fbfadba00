"""Compose the suite's Hydra config from Python (tests, notebooks, the API), exactly as
the command line does."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import initsuite.config  # noqa: F401  (registers the typed schema with ConfigStore)



def _conf_dir() -> Path:
    """The Hydra configs: ``initsuite/conf`` in an installed copy (package data), ``conf/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"initsuite's configs are missing: neither {here / 'conf'} nor {here.parent / 'conf'} "
                            "holds config.yaml (a broken install?)")


CONF_DIR = _conf_dir()


def compose(overrides: Optional[Iterable[str]] = None, config_name: str = "config",
            return_hydra_config: bool = False) -> DictConfig:
    """The config ``initsuite run`` would see for these command-line overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []),
                             return_hydra_config=return_hydra_config)
