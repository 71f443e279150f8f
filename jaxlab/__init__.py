"""jaxlab: pure-function JAX experiments on one device or many."""

__version__ = "0.1.0"
