from __future__ import annotations

import pickle

import pytest

from wsi_her2.errors import (
    ConfigError,
    InputNotFoundError,
    MppError,
    NoTissueError,
    SlideReadError,
    WsiHer2Error,
)


def test_user_message_is_one_line_with_the_hint_capitalised() -> None:
    err = MppError("slide.svs: the slide's µm/px is unknown", hint="give it with --mpp")
    assert err.user_message() == "slide.svs: the slide's µm/px is unknown. Give it with --mpp."
    assert "\n" not in err.user_message()


def test_errors_keep_their_hint_across_processes() -> None:
    err = pickle.loads(pickle.dumps(SlideReadError("bad tile", hint="copy it again")))
    assert isinstance(err, SlideReadError) and err.hint == "copy it again"


@pytest.mark.parametrize(
    ("cls", "code"),
    [(ConfigError, 2), (InputNotFoundError, 3), (SlideReadError, 4), (MppError, 5), (NoTissueError, 6)],
)
def test_each_error_has_its_documented_exit_code(cls: type[WsiHer2Error], code: int) -> None:
    assert cls("x").exit_code == code
    assert issubclass(cls, WsiHer2Error)
