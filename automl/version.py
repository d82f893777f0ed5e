"""The package's version, on its own: a module that prints it need not import the package's root."""

__version__ = "0.1.0"
