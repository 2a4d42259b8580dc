"""pypireg: a self-hosted Python package registry on Twisted."""

__version__ = "0.1.0"
