"""Typed configuration schemas, registered with Hydra's ConfigStore.

Every yaml file under ``conf/`` is merged into these dataclasses, so a wrong
type (``model.depth=ten``) or an unknown key fails when the config is
composed, with an error that names the key. The field names are the public
command-line interface: ``dataset.source``, ``model.depth``, ``init.stddev``...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class DatasetConfig:
    name: str = "mnist"  # mnist | fashion_mnist | cifar10 | synthetic | shapeset
    source: str = "auto"  # auto | tfds | files | embedded (ignored for synthetic and shapeset); see initsuite.setup.data
    path: Optional[str] = None  # folder with the standard distribution files (source=files)
    data_dir: Optional[str] = None  # tfds data_dir; None = tfds default (~/tensorflow_datasets)
    valid_size: int = 10000  # examples of the official train split held out for validation
    limit_train: Optional[int] = None  # keep only the first N training examples (quick runs)
    # synthetic: tiny class-dependent data generated from the seed; shapeset: the sizes of its fixed splits
    n_train: int = 512
    n_valid: int = 128
    n_test: int = 128
    image_shape: List[int] = field(default_factory=lambda: [8, 8, 1])
    num_classes: int = 10


@dataclass
class ModelConfig:
    name: str = "mlp"  # mlp | cnn | custom
    depth: int = 5  # hidden dense layers (mlp) or conv layers (cnn)
    width: int = 1000  # units (mlp) or channels (cnn)
    pool_every: int = 2  # cnn: 2x2 max-pool after every k-th conv (while the map is > 1 px)
    head_width: int = 0  # cnn: units of the dense layer before the classifier (0 = none)
    dropout: float = 0.0  # tf_deep_mnist: dropout rate before the classifier (the tutorial: 0.5)
    builder: Optional[str] = None  # custom: "package.module:function"
    kwargs: Dict[str, Any] = field(default_factory=dict)  # custom: extra builder arguments


@dataclass
class InitConfig:
    name: str = "glorot_uniform"  # registry key in initsuite.setup.initializers
    label: Optional[str] = None  # the name in tables and legends; defaults to `name`
    stddev: Optional[float] = None  # random_normal / truncated_normal
    mean: float = 0.0
    minval: Optional[float] = None  # random_uniform
    maxval: Optional[float] = None
    value: Optional[float] = None  # constant
    gain: float = 1.0  # orthogonal; multiplier for variance-scaling inits
    variance_norm: Optional[str] = None  # caffe_xavier / caffe_msra: fan_in (Caffe's default) | fan_out | average
    bias: float = 0.0  # constant value every bias starts at (the TF tutorial used 0.1)
    tol: float = 0.1  # lsuv: stop a layer when |Var[output] - 1| < tol (Mishkin & Matas' reference code)
    max_iter: int = 10  # lsuv: at most this many rescalings per layer


@dataclass
class ActivationConfig:
    name: str = "tanh"  # registry key in initsuite.setup.activations
    alpha: Optional[float] = None  # leaky_relu slope / elu alpha (None = the activation's default)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | momentum | adam
    lr: float = 0.01
    momentum: float = 0.9  # momentum only
    beta_1: float = 0.9  # adam only
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    max_steps: Optional[int] = None  # stop after this many updates (quick runs)
    eval_every: int = 0  # also evaluate train/valid/test every k steps (0 = epoch ends only)
    eval_steps: List[int] = field(default_factory=list)  # and at these steps (e.g. log-spaced, for curves)
    eval_examples: int = 10000  # examples per split used for each evaluation (the whole split if smaller)
    stop_on_nonfinite: bool = True  # stop at the first NaN/Inf (the run is recorded as diverged)
    nonfinite_check_every: int = 50  # steps between host reads of the in-graph NaN flag
    jit_compile: bool = False  # XLA-compile the training step
    mixed_precision: bool = False  # bfloat16 compute (mixed_bfloat16 policy); statistics stay float32
    threads: int = 0  # TensorFlow intra/inter-op threads (0 = TensorFlow's choice)
    progress: bool = True  # per-run progress bar with the loss
    # Run leases (initsuite.run.lease): one process per run folder, across launchers and hosts.
    lease_heartbeat_s: float = 30.0  # seconds between heartbeats of a run's lease.json
    lease_stale_s: float = 300.0  # a lease whose heartbeat is older than this is taken over
    # Checkpoints (initsuite.run.checkpoint): a relaunch resumes an interrupted run where it stopped.
    checkpoint_every: int = 0  # steps between checkpoints (0 = by time only)
    checkpoint_minutes: float = 10.0  # minutes of training between checkpoints (0 = by steps only)


@dataclass
class ProbesConfig:
    enabled: bool = True  # false: the per-step NaN/Inf forensics only (no probe, no training-batch rows)
    # Fixed-probe steps: every `every` steps, or null: log-spaced (0, 10, 30, 100, 300, 1000, ...) plus
    # each epoch's end; step 0 (before any update) and the last step are always measured.
    every: Optional[int] = None
    # Training-batch statistics inside the train step (layer_stats rows with batch=train): every
    # train_every-th step (1 = every step, 0 = off), read off the device once per train_buffer rows.
    train_every: int = 10
    train_buffer: int = 100
    train_quantiles: bool = False  # also percentiles and histograms of the training batch (every statistic)
    hist_steps: List[int] = field(default_factory=lambda: [0, -1])  # steps whose histograms are kept (-1 = last)
    batch_size: int = 300  # fixed probe batch taken from the test split (the paper used 300)
    hist_bins: int = 100
    percentiles: List[float] = field(default_factory=lambda: [2.0, 50.0, 98.0])


@dataclass
class PathsConfig:
    results: str = "results"  # root of all outputs (relative paths resolve against the launch dir)
    runs: str = "${paths.results}/runs"  # run folders: <runs>/<run_id>/


@dataclass
class TuneConfig:
    # select over this swept config key per group of the other config columns (initsuite.analysis.selection),
    # e.g. optimizer.lr (several: "optimizer.lr,model.depth"); None = no selection
    axis: Optional[str] = None
    metric: str = "valid_error"  # lowest is best: valid_error (best over evaluations) or a numeric runs column


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # how a sweep's figures and tables pick along an axis
    seed: int = 0
    force: bool = False  # rerun even if a finished run with the same id exists
    experiment: str = "single"  # name of the preset (sweeps group their runs by it); a preset sets it
    extra: Dict[str, Any] = field(default_factory=dict)  # free-form, for presets and user notes


class ConfigError(ValueError):
    """A config value that composes but cannot be run; the message names the key."""


MAX_DEPTH = 1000  # model.depth above this is a typo, not an experiment (the presets go to 100)
MAX_WIDTH = 1 << 16  # units or channels per layer

# key -> (smallest, largest) allowed value; None = unbounded. Checked by :func:`check` after the
# schema's types: what composes but cannot be run. (The data module checks its own fields
# again when it loads, with the same bounds.)
RANGES = {
    "model.depth": (0, MAX_DEPTH),
    "model.width": (1, MAX_WIDTH),
    "train.epochs": (1, None),
    "train.batch_size": (1, None),
    "train.max_steps": (0, None),  # 0: measure the initialization only
    "train.eval_every": (0, None),
    "train.eval_examples": (0, None),  # 0: no evaluation (the benchmark)
    "train.nonfinite_check_every": (1, None),
    "train.threads": (0, None),
    "train.lease_heartbeat_s": (0, None),
    "train.lease_stale_s": (1, None),
    "train.checkpoint_every": (0, None),
    "train.checkpoint_minutes": (0, None),
    "probes.every": (1, None),
    "probes.train_every": (0, None),
    "probes.train_buffer": (1, None),
    "probes.batch_size": (1, None),
    "probes.hist_bins": (1, None),
    "dataset.valid_size": (0, None),
    "dataset.limit_train": (1, None),
    "dataset.n_train": (1, None),
    "dataset.n_valid": (0, None),
    "dataset.n_test": (1, None),
    "dataset.num_classes": (2, None),
    "seed": (0, None),
}
POSITIVE = ("optimizer.lr",)  # floats that must be > 0
_BUILDER_DECIDES = ("model.depth", "model.width")  # model=custom: the builder's business


def check(cfg) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is out of :data:`RANGES`
    (or not > 0 for :data:`POSITIVE`); ``None`` passes for optional keys."""
    from omegaconf import OmegaConf

    custom = OmegaConf.select(cfg, "model.name") == "custom"
    for key, (lo, hi) in RANGES.items():
        if custom and key in _BUILDER_DECIDES:
            continue
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            want = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise ConfigError(f"{key} must be {want}, got {value}")
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if OmegaConf.select(cfg, "train.lease_stale_s") <= OmegaConf.select(cfg, "train.lease_heartbeat_s"):
        raise ConfigError(f"train.lease_stale_s must be larger than train.lease_heartbeat_s, got "
                          f"{cfg.train.lease_stale_s} <= {cfg.train.lease_heartbeat_s}")
    if OmegaConf.select(cfg, "probes.train_quantiles") and OmegaConf.select(cfg, "train.jit_compile"):
        raise ConfigError(f"probes.train_quantiles=true needs train.jit_compile=false: exact selection keeps a "
                          f"number of values known only at run time, which XLA cannot compile into the step")
    for q in OmegaConf.select(cfg, "probes.percentiles") or ():
        if not 0 <= q <= 100:
            raise ConfigError(f"probes.percentiles must lie in [0, 100], got {q}")


SCHEMAS = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "init": InitConfig,
    "activation": ActivationConfig,
    "optimizer": OptimizerConfig,
    "train": TrainConfig,
    "probes": ProbesConfig,
    "paths": PathsConfig,
}


def register_configs() -> None:
    """Register the top-level schema as ``schema``; ``conf/config.yaml`` lists it first. Its defaults
    are the composed defaults of ``conf/`` (a test composes both and compares them).

    Group files are merged into its typed fields, so they are checked too. No
    per-group entries: they would show up in ``init=glob(*)`` sweeps.
    """
    ConfigStore.instance().store(name="schema", node=Config)


register_configs()
