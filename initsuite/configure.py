"""Compose the suite's Hydra config from Python (tests, notebooks, the API), exactly as
the command line does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

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
    from initsuite.data import DataError
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
    from initsuite.custom import BuilderError

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


def _is_hydra_key(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def covering_jobs(jobs: Sequence[Sequence[str]]) -> List[List[str]]:
    """The jobs of a grid that together contain every value of every axis at least once
    (about the sum of the axis lengths, not their product): enough to find a bad value."""
    seen, out = set(), []
    for job in jobs:
        new = set(job) - seen
        if new or not out:
            out.append(list(job))
            seen |= new
    return out


def check_cli(args: Sequence[str], sweep: bool = False) -> None:
    """Compose what a command line asks for (every value of every swept axis) and run the
    suite's checks (:func:`initsuite.train.validate`) before Hydra starts and before any
    folder is made; a mistake prints one line ``initsuite: <key...>: <what is wrong>`` and
    exits with status 2. Command lines with Hydra flags (``--cfg``, ``--help``...) are left
    to Hydra."""
    args = [a for a in args if a not in ("--multirun", "-m")]
    if any(a.startswith("-") for a in args):
        return
    overrides = [a for a in args if not _is_hydra_key(a)]
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from initsuite.sweep import DEFAULT_EXPERIMENT, job_overrides
        from initsuite.train import validate

        if sweep and not any(a.startswith("+experiment=") for a in overrides):
            overrides.append(f"+experiment={DEFAULT_EXPERIMENT}")
        parsed = OverridesParser.create().parse_overrides(overrides)
        base = compose([o.input_line for o in parsed if not o.is_sweep_override()], return_hydra_config=True)
        params = base.hydra.sweeper.params if sweep else None
        from omegaconf import OmegaConf

        jobs = job_overrides(OmegaConf.to_container(params) if params else {}, overrides)
        for job in covering_jobs(jobs):
            validate(compose(job))
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            return  # not a mistake we know how to explain: Hydra reports it as it always has
        print(f"initsuite: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
