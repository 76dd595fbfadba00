"""initsuite: which weight initialization lets this network train, and why — measured.

See README.md. Importing the package is cheap: TensorFlow is imported only by the
modules that train (train, instrument, probes, models, data).
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `initsuite.compare` imports TensorFlow only when used
    if name == "compare":
        from initsuite.sweep.api import compare

        return compare
    raise AttributeError(f"module 'initsuite' has no attribute {name!r}")
