"""A resumable sweep over a preset's grid (conf/experiment/<preset>.yaml), collected into tables.

    make sweep                                   # the default preset
    make sweep EXP=smoke ARGS='model.depth=1,2'  # any preset; ARGS adds or narrows axes
    python experiments/sweep.py +experiment=tn_vs_xavier hydra/launcher=slurm

The last line printed is the sweep folder, <paths.results>/sweeps/<experiment>/.
"""

import sys

import hydra
from omegaconf import DictConfig

import initsuite.config  # noqa: F401  (registers the typed schema)
from initsuite.configure import check_cli
from initsuite.sweep import sweep_argv, sweep_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    return sweep_job(cfg)


if __name__ == "__main__":
    check_cli(sys.argv[1:], sweep=True)  # a mistake: one line naming the key, exit 2, before any folder
    sys.argv = sweep_argv(sys.argv)  # --multirun, +experiment=default, hydra/callbacks=sweep
    main()
