"""The optimizer registry: plain SGD (the paper's), SGD with momentum, Adam."""

from __future__ import annotations

from initsuite.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(cfg):
    """W <- W - lr g (Glorot & Bengio 2010 used plain SGD, minibatch 10)."""
    import keras

    return keras.optimizers.SGD(learning_rate=cfg.lr)


@OPTIMIZERS.register("momentum")
def _momentum(cfg):
    """Heavy-ball momentum: v <- m v - lr g; W <- W + v."""
    import keras

    return keras.optimizers.SGD(learning_rate=cfg.lr, momentum=cfg.momentum)


@OPTIMIZERS.register("adam")
def _adam(cfg):
    """Adam (Kingma & Ba 2015)."""
    import keras

    return keras.optimizers.Adam(learning_rate=cfg.lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon)


def make_optimizer(cfg):
    return OPTIMIZERS.get(cfg.name)(cfg)
