from __future__ import annotations

from pathlib import Path

import pytest

from wsi_her2.errors import OutputError
from wsi_her2.outputs.atomic import atomic_path, clean_temporaries, write_json, write_text


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_complete_file(tmp_path: Path) -> None:
    target = write_text(tmp_path / "a.txt", "complete")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "complete"


def test_folders_are_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "heatmap.zarr"
    for version in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "data").write_text(version)
    assert (target / "data").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["heatmap.zarr"]


def test_json_turns_nan_into_null(tmp_path: Path) -> None:
    import numpy as np

    path = write_json(tmp_path / "x.json", {"a": float("nan"), "b": np.float32(1.5), "c": np.arange(2)})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"a":null,"b":1.5,"c":[0,1]}'


def test_unwritable_folder_is_an_output_error(tmp_path: Path) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(OutputError, match="permission"):
            write_text(locked / "a.txt", "x")
    finally:
        locked.chmod(0o700)


def test_leftover_temporaries_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".tmp-1234-report.json").write_text("half")
    (tmp_path / "report.json").write_text("ok")
    assert clean_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_writing_under_a_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        write_text(blocker / "report.html", "x")
