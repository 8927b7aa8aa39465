"""Typed errors: every failure a user can cause has a class, a one-line message and an exit code.

The library raises these and never exits; the command line turns them into one line on stderr
and the exit code below (documented in the README, "Exit codes").
"""

from __future__ import annotations


class WsiHer2Error(Exception):
    """Base class of every error wsi-her2 raises on purpose.

    Attributes:
        exit_code: the process exit code the command line uses for this error.
        hint: what the user can do about it, appended to the message.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (loader workers, Dask); keep the hint on the way.
        return (_rebuild, (type(self), self.message, self.hint))

    def user_message(self) -> str:
        """The one line shown to a user: what was wrong, then what to do."""
        text = self.message.rstrip(".")
        if not self.hint:
            return f"{text}."
        hint = self.hint.rstrip(".")
        return f"{text}. {hint[:1].upper()}{hint[1:]}."


class ConfigError(WsiHer2Error):
    """An option or configuration value is invalid (exit 2, as for command-line usage errors)."""

    exit_code = 2


class InputNotFoundError(WsiHer2Error):
    """A file or folder named on the command line does not exist or cannot be read (exit 3)."""

    exit_code = 3


class SlideReadError(WsiHer2Error):
    """A slide is not a slide: unsupported format, corrupt or truncated file (exit 4)."""

    exit_code = 4


class MalformedSlideError(SlideReadError):
    """A slide's header declares sizes beyond what can be read safely, or contradicts its own data (exit 4).

    A resource bomb (a 200,000-px image in one strip, a JPEG tile declaring 60,000 px), a pyramid whose
    levels lie about their sizes, tiles past the end of the file. No other reader is tried for it.
    """


class MppError(WsiHer2Error):
    """The slide's µm/px is missing or implausible and no --mpp was given (exit 5)."""

    exit_code = 5


class NoTissueError(WsiHer2Error):
    """No tissue was found, so there is nothing to tile or score (exit 6)."""

    exit_code = 6


class ModelError(WsiHer2Error):
    """A checkpoint is missing, unreadable, unsafe or does not match its model card (exit 7)."""

    exit_code = 7


class StainMismatchError(WsiHer2Error):
    """The slide's stain is not the one the model expects, e.g. H&E given to the DAB scorer (exit 8)."""

    exit_code = 8


class DeviceError(WsiHer2Error):
    """The compute device asked for is absent, or ran out of memory even at the smallest batch (exit 9)."""

    exit_code = 9


class OutputError(WsiHer2Error):
    """An output cannot be written: folder not writable, disk full, or it would overwrite input (exit 10)."""

    exit_code = 10


class DatasetError(WsiHer2Error):
    """A training or evaluation dataset is missing, empty or laid out wrongly (exit 11)."""

    exit_code = 11


class BatchFailedError(WsiHer2Error):
    """A batch ran to the end but one or more slides failed (exit 12); the summary lists them."""

    exit_code = 12


def _rebuild(cls: type[WsiHer2Error], message: str, hint: str | None) -> WsiHer2Error:
    return cls(message, hint=hint)
