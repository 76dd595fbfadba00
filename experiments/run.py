"""One instrumented training run.

    make run ARGS='dataset=synthetic init=standard activation=tanh model.depth=5'
    python experiments/run.py init=he_normal activation=relu model.depth=10
"""

import sys

import hydra
from omegaconf import DictConfig

import initsuite.config  # noqa: F401  (registers the typed schema)
from initsuite.configure import check_cli
from initsuite.train import run_cli


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_cli(cfg)


if __name__ == "__main__":
    check_cli(sys.argv[1:])  # a mistake: one line naming the key, exit 2, before any folder is made
    main()
