"""The one error of the viewer's request handling: a request that names nothing the server serves.

Raised by the tiler, the layers and the result folders for bad levels, coordinates, channels or
file names; the server turns it into a 4xx response (the status below), never a crash.
"""

from __future__ import annotations


class RequestError(LookupError):
    """A request for something that does not exist (404) or is malformed (400).

    Attributes:
        status: the HTTP status the server answers with.
    """

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_int(value: str | None, name: str) -> int:
    """A non-negative decimal integer from a URL part, or a 400 :class:`RequestError`."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 9:
        raise RequestError(f"{name} must be a non-negative integer, got {value!r}", status=400)
    return int(value)
