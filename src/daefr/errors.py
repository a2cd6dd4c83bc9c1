"""Exception types shared across daefr; each message says what is wrong and how to fix it."""

from __future__ import annotations


class DaefrError(Exception):
    """Base class of every error daefr raises on purpose."""


class ConfigError(DaefrError, ValueError):
    """A configuration value or component spec is invalid."""


class UnknownComponentError(DaefrError, LookupError):
    """A registry lookup named a component that does not exist."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class PluginLoadError(DaefrError, ImportError):
    """A plugin (or built-in) component could not be imported."""


class CheckpointError(DaefrError):
    """A checkpoint file is missing, corrupt, unsafe or incompatible."""


class UnsafeFileError(CheckpointError):
    """A file asks for something daefr never does for a file: import code, unpickle, allocate without bound."""


class ImageReadError(DaefrError):
    """An input image cannot be used; the message is one line with the reason."""


class WeightsNotFoundError(DaefrError, FileNotFoundError):
    """A weights file that a component needs is missing; the message says where to put it."""
