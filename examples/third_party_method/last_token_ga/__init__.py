"""LastTokenGA: an example third-party unlearning method packaged as an OpenUnlearning plugin."""

__version__ = "0.1.0"
