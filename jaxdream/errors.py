"""Exceptions a user can act on.

Every error that reaches the command line is a :class:`JaxdreamError`; the CLI prints its
message as one line on stderr and exits non-zero. Library callers can catch the subclasses.
"""


class JaxdreamError(Exception):
    """Base class: the message is complete, one line, and names the file, layer or value."""


class WeightsError(JaxdreamError):
    """A weights file is missing, corrupt, of the wrong kind, or does not fit the model."""


class MediaError(JaxdreamError):
    """An image or video cannot be read or written."""


class LayerError(JaxdreamError, KeyError):
    """An unknown model or layer name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SettingsError(JaxdreamError, ValueError):
    """A setting is out of range or inconsistent with the others."""
