"""Checkpoints from strangers: pickles that would run code, cards that lie, safetensors with wrong headers.

A pickle's payload here would create a marker file; every test asserts the marker never appears.
Every refusal is one line with exit 7 (model problem), before any slide is read.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.abuse.conftest import CliResult, assert_one_line

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a pickle payload ran"


def _pickle(path: Path, marker: Path, *, torch_format: bool) -> Path:
    if torch_format:
        torch.save({"state_dict": {"conv1.weight": _Payload(marker)}}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    return path


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of the tiny test ResNet (4 classes, IHC)."""
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model

    torch.manual_seed(0)
    card = ModelCard(architecture="test_resnet", classes=("0", "1+", "2+", "3+"), stain="ihc", name="honest")
    return save_checkpoint(create_model("test_resnet", 4), card, tmp_path_factory.mktemp("honest") / "ckpt")


def _copy(honest: Path, dest: Path, **card_changes: Any) -> Path:
    import shutil

    shutil.copytree(honest, dest)
    card_path = dest / "model_card.json"
    card = json.loads(card_path.read_text())
    card.update(card_changes)
    card_path.write_text(json.dumps(card))
    return dest


def _score(cli: Callable[..., CliResult], slide: Path, model: Path, out: Path) -> CliResult:
    return cli("score", slide, "-o", out, "--model", model, "--device", "cpu", "--quiet", "--workers", "0")


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt", ".bin", ".pkl"])
@pytest.mark.parametrize("torch_format", [True, False], ids=["torch.save", "pickle"])
def test_a_pickle_checkpoint_is_refused_and_never_loaded(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, marker: Path, suffix: str, torch_format: bool
) -> None:
    evil = _pickle(tmp_path / f"model{suffix}", marker, torch_format=torch_format)
    result = _score(cli, small_slide, evil, tmp_path / "out")
    assert_one_line(result, 7, "pickle-based checkpoint, which wsi-her2 never loads")
    assert not (tmp_path / "out").exists()


def test_a_pickle_named_model_safetensors_is_refused_and_never_loaded(
    cli: Callable[..., CliResult], small_slide: Path, honest: Path, tmp_path: Path, marker: Path
) -> None:
    from wsi_her2.models.card import file_sha256

    folder = _copy(honest, tmp_path / "ckpt")
    _pickle(folder / "model.safetensors", marker, torch_format=True)
    card = json.loads((folder / "model_card.json").read_text())
    card["weights_sha256"] = file_sha256(folder / "model.safetensors")  # the card vouches for it
    (folder / "model_card.json").write_text(json.dumps(card))
    assert_one_line(_score(cli, small_slide, folder, tmp_path / "out"), 7, "not a readable safetensors file")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_pretrained_weights_never_run(tmp_path: Path, marker: Path) -> None:
    """`train --pretrained-weights` reads .pth files with torch's weights-only unpickler."""
    from wsi_her2.errors import ModelError
    from wsi_her2.models.registry import create_model

    for torch_format in (True, False):
        evil = _pickle(tmp_path / f"evil-{torch_format}.pth", marker, torch_format=torch_format)
        with pytest.raises(ModelError) as caught:
            create_model("test_resnet", 4, pretrained=evil)
        assert "\n" not in caught.value.user_message()


def test_the_honest_checkpoint_scores(cli: Callable[..., CliResult], small_slide: Path, honest: Path, tmp_path: Path):
    result = _score(cli, small_slide, honest, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["architecture"] == "test_resnet"


LYING_CARDS: dict[str, tuple[dict[str, Any], str]] = {
    "another architecture": ({"architecture": "test_convnext"}, "do not fit a test_convnext with 4 classes"),
    "an unknown architecture": ({"architecture": "evil_net"}, "evil_net"),
    "three classes for four outputs": ({"classes": ["neg", "equiv", "pos"]}, "do not fit a test_resnet with 3"),
    "five classes": ({"classes": ["0", "1+", "2+", "3+", "4+"]}, "do not fit"),
    "duplicate classes": ({"classes": ["0", "0", "2+", "3+"]}, "class names must be distinct"),
    "classes as one string": ({"classes": "0123"}, "classes must be a list"),
    "one class": ({"classes": ["0"]}, "at least two classes"),
    "another head": ({"head_hidden": [64]}, "do not fit"),
    "a head of 10^9 units": ({"head_hidden": [1_000_000_000]}, "head_hidden"),
    "input size as text": ({"input_size_px": "224"}, "input_size_px"),
    "input size of 10^6": ({"input_size_px": 1_000_000}, "input_size_px"),
    "NaN tile µm/px": ({"tile_mpp": float("nan")}, "tile_mpp"),
    "NaN mean": ({"mean": [float("nan"), 0.5, 0.5]}, "mean"),
    "zero std": ({"std": [0.0, 0.2, 0.2]}, "std"),
    "dropout 7": ({"head_dropout": 7}, "head_dropout"),
    "another stain": ({"stain": "fluorescence"}, "stain must be one of"),
    "not a card": ({"format": "something-else"}, "not a wsi-her2 model card"),
    "another weight hash": ({"weights_sha256": "0" * 64}, "does not match its model card"),
}


@pytest.mark.parametrize("case", list(LYING_CARDS))
def test_a_card_that_lies_about_its_weights_is_one_line_exit_7(
    cli: Callable[..., CliResult], small_slide: Path, honest: Path, tmp_path: Path, case: str
) -> None:
    changes, needle = LYING_CARDS[case]
    folder = _copy(honest, tmp_path / "ckpt", **changes)
    result = _score(cli, small_slide, folder, tmp_path / "out")
    assert_one_line(result, 7, needle)
    assert not (tmp_path / "out").exists()


def _safetensors(header: bytes, data: bytes = b"", *, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


BAD_SAFETENSORS: dict[str, bytes] = {
    "empty file": b"",
    "header length 2^63": _safetensors(b"{}", length=2**63),
    "header length past the end": _safetensors(b"{}", length=10_000),
    "header not JSON": _safetensors(b"\xff\xfe not json"),
    "header a JSON list": _safetensors(b"[1, 2, 3]"),
    "offsets past the end": _safetensors(json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000],
                                                           "data_offsets": [0, 4_000_000]}}).encode(), b"\x00" * 16),
    "shape not matching offsets": _safetensors(json.dumps({"w": {"dtype": "F32", "shape": [10**9, 10**9],
                                                                 "data_offsets": [0, 16]}}).encode(), b"\x00" * 16),
    "unknown dtype": _safetensors(json.dumps({"w": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}).encode(),
                                  b"\x00" * 16),
    "right format, wrong tensors": _safetensors(json.dumps({"w": {"dtype": "F32", "shape": [4],
                                                                  "data_offsets": [0, 16]}}).encode(), b"\x00" * 16),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_SAFETENSORS))
def test_safetensors_with_a_wrong_header_is_one_line_exit_7(
    cli: Callable[..., CliResult], small_slide: Path, honest: Path, tmp_path: Path, case: str
) -> None:
    from wsi_her2.models.card import file_sha256

    folder = _copy(honest, tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(BAD_SAFETENSORS[case])
    _copy_hash = file_sha256(folder / "model.safetensors")
    card = json.loads((folder / "model_card.json").read_text())
    card["weights_sha256"] = _copy_hash
    (folder / "model_card.json").write_text(json.dumps(card))
    result = _score(cli, small_slide, folder, tmp_path / "out")
    line = assert_one_line(result, 7)
    assert "safetensors" in line or "do not fit" in line
