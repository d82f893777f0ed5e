"""TensorFlow's start-up chatter kept off the user's terminal.

Importing TensorFlow prints absl and CUDA-stub lines on stderr ("All log messages before
absl::InitializeLog() ...", "Could not find cuda drivers ...") from C++, whatever
``TF_CPP_MIN_LOG_LEVEL`` says; users read them as errors. :func:`import_tensorflow` points
file descriptor 2 at ``/dev/null`` for the import only; errors raised by the import still
reach the caller as exceptions, and ``--verbose`` shows everything.
"""

from __future__ import annotations

import os
import sys

__all__ = ["import_tensorflow"]


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras once, silently unless ``verbose``."""
    if "keras" in sys.modules or verbose:
        import keras  # noqa: F401
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow as tf

        # CUDA's probe prints "failed call to cuInit" on a machine without a GPU at the first device listing
        # (automl.devices.detect, after the search when local workers ran it): made here, while silenced.
        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
