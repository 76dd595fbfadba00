"""initsuite inside your own ``model.fit`` (docs/keras-watch.md):

    import initsuite.keras
    model = initsuite.keras.watch(model, probe=(x_test[:300], y_test[:300]), out="results/runs/adam")

The implementation is :mod:`initsuite.run.watch`; this module is its public name. (Inside the
package ``import keras`` is absolute, so this module never shadows Keras itself.)
"""

from initsuite.run.watch import Watch, watch

__all__ = ["watch", "Watch"]
