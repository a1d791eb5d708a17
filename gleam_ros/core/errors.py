"""User-facing errors of the gleam_ros core.

Every error names the file, parameter or input at fault, so the CLI and the nodes can print
one clear line (and exit non-zero, or drop the frame with a diagnostic) instead of a traceback.
"""

from __future__ import annotations


class GleamError(Exception):
    """Base class of every error the core raises on purpose (bad input, bad file, bad config)."""


class InputError(GleamError):
    """A frame or array handed to the core is unusable (empty, wrong shape/dtype, NaN, corrupt)."""


class MapError(GleamError):
    """A reference map cannot be read or has no usable georeferencing."""


class ModelError(GleamError):
    """Encoder weights, model card or ONNX file missing, unreadable or inconsistent."""


class IndexFormatError(GleamError):
    """A tile index directory is missing files, truncated or of an unknown format version."""


class IndexMismatchError(GleamError):
    """A tile index was built with a different encoder or preprocessing than the one loaded."""


class ConfigError(GleamError):
    """A configuration value is out of range or inconsistent."""
