"""initsuite: which weight initialization lets this network train, and why — measured.

See README.md. Importing the package is cheap: TensorFlow is imported only by the
modules that train (train, instrument, probes, models, data).
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `initsuite.compare` / `initsuite.keras` import TensorFlow only when used
    if name == "compare":
        from initsuite.sweep.api import compare

        return compare
    if name == "keras":  # initsuite.keras.watch(model, ...): the suite inside a user's own model.fit
        import importlib

        return importlib.import_module("initsuite.keras")
    raise AttributeError(f"module 'initsuite' has no attribute {name!r}")
