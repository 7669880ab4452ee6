"""Exceptions ad3d raises for bad input; the CLI turns each into one line and exit code 2."""


class Ad3dError(Exception):
    """Base of every error caused by the user's input rather than by a bug in ad3d."""


class ScanFormatError(Ad3dError, ValueError):
    """A scan file is missing, unreadable, truncated, malformed or of an unknown format."""


class DatasetError(Ad3dError, ValueError):
    """A dataset folder does not have the layout its format requires."""


class ConfigError(Ad3dError, ValueError):
    """A parameter or option has a value ad3d cannot use."""


class ModelFormatError(Ad3dError, ValueError):
    """A saved model file is missing, truncated, tampered with or of an incompatible version."""


class WeightsError(Ad3dError, ValueError):
    """A pretrained-weights file is missing, truncated, or not the checkpoint a backbone expects."""


class ScoringError(Ad3dError, ValueError):
    """Scoring a scan gave no usable number (NaN or inf): the scan is refused, never accepted."""
