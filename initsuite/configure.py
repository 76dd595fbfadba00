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


# --------------------------------------------------------------------------- the command line


def user_message(exc: BaseException) -> Optional[str]:
    """One line for a mistake on the command line (the key first), or None if ``exc`` is not one.

    Hydra and OmegaConf say where the error is over several lines (the full key, the
    schema class, the search path); the user needs the key, the value and the choices."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from initsuite.config import ConfigError
    from initsuite.setup.data import DataError
    from initsuite.registry import UnknownNameError

    if isinstance(exc, MissingConfigException):
        missing = str(exc.missing_cfg_file or "")
        group, _, option = missing.rpartition("/")
        options = ", ".join(exc.options or [])
        what = "preset" if group == "experiment" else "option"
        if group:
            return f"{group}={option}: no such {what} in conf/{group}/" + (f" (choose from: {options})" if options else "")
        return _one_line(str(exc))
    if isinstance(exc, (ConfigCompositionException, OverrideParseException)):
        cause = exc.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            return f"{cause.full_key}: no such key" + _known_keys(cause)
        if isinstance(cause, OmegaConfBaseException):
            text = (getattr(cause, "msg", "") or str(cause)).strip().splitlines()
            return f"{cause.full_key}: {_one_line(text[0] if text else type(cause).__name__)}"
        return _one_line(str(exc))
    if isinstance(exc, (ConfigError, DataError, UnknownNameError)):
        return _one_line(str(exc))
    from initsuite.setup.custom import BuilderError

    if isinstance(exc, BuilderError):
        return _one_line(str(exc))
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _known_keys(cause) -> str:
    parent = (cause.full_key or "").rpartition(".")[0]
    try:
        from initsuite.config import SCHEMAS

        fields = SCHEMAS[parent].__dataclass_fields__ if parent in SCHEMAS else None
    except Exception:  # pragma: no cover
        fields = None
    return f" ({parent} has: {', '.join(fields)})" if fields else ""
