"""Dataset layouts, labels, splits and the blank filter."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.training.helpers import make_tile_set
from wsi_her2.errors import DatasetError, InputNotFoundError
from wsi_her2.outputs.images import write_image
from wsi_her2.training.config import DataConfig
from wsi_her2.training.datasets import detect_layout, load_images, parse_label, read_rgb
from wsi_her2.training.split import split_train_val


def test_bci_layout_is_detected_and_read_per_split(bci_small: Path) -> None:
    assert detect_layout(bci_small) == "bci"
    train = load_images(bci_small, DataConfig(), "train")
    test = load_images(bci_small, DataConfig(stain="he"), "test")
    assert train.counts() == {"0": 8, "1+": 8, "2+": 8, "3+": 8}
    assert test.counts() == {"0": 2, "1+": 2, "2+": 2, "3+": 2}
    assert all("IHC" in p.parts for p in train.paths) and all("HE" in p.parts for p in test.paths)
    assert train.native_size_px == 64 and not any(train.groups)  # BCI names carry no patient id
    assert "slide each patch came from" in train.describe()["label_note"]


def test_three_classes_group_0_and_1_plus_as_negative(bci_small: Path) -> None:
    images = load_images(bci_small, DataConfig(num_classes=3), "train")
    assert images.classes == ("negative", "equivocal", "positive")
    assert images.counts() == {"negative": 16, "equivocal": 8, "positive": 8}


@pytest.mark.parametrize(
    ("text", "classes", "expected"),
    [("2+", 4, 2), ("2", 4, 2), ("0", 4, 0), ("3+", 3, 2), ("1+", 3, 0), ("Equivocal", 3, 1), ("4+", 4, None)],
)
def test_parse_label(text: str, classes: int, expected: int | None) -> None:
    from wsi_her2.training.datasets import class_names

    assert parse_label(text, class_names(classes)) == expected


def test_tile_sets_read_labels_and_slides(bci_small: Path, tmp_path: Path) -> None:
    folder = make_tile_set(bci_small, tmp_path / "tiles")
    assert detect_layout(folder) == "tiles"
    images = load_images(folder, DataConfig(), "train")
    assert len(images) == 32 and images.tile_size_level0_px == 1024
    assert set(images.groups) == {f"case{s}{k}" for s in "0123" for k in (0, 1)}


def test_unlabelled_tiles_are_skipped_and_a_labels_csv_can_label_them(bci_small: Path, tmp_path: Path) -> None:
    folder = make_tile_set(bci_small, tmp_path / "tiles", label_column=False)
    with pytest.raises(DatasetError, match="has a label"):
        load_images(folder, DataConfig(), "train")
    names = sorted(p.name for p in folder.glob("*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{n},{'3+' if i % 2 else '0'}\n" for i, n in enumerate(names[:10])))
    images = load_images(folder, DataConfig(labels_csv=str(labels)), "train")
    assert len(images) == 10 and images.counts() == {"0": 5, "1+": 0, "2+": 0, "3+": 5}
    assert all(images.groups)  # slides come from tiles.csv when the labels CSV has none


def test_labels_that_are_not_classes_are_errors(bci_small: Path, tmp_path: Path) -> None:
    folder = make_tile_set(bci_small, tmp_path / "tiles", label_column=False)
    name = next(folder.glob("*.png")).name
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,label\n{name},4+\n")
    with pytest.raises(DatasetError, match=r"'4\+'.*not a class"):
        load_images(folder, DataConfig(labels_csv=str(labels)), "train")
    labels.write_text("file,label\nmissing.png,2+\n")
    with pytest.raises(InputNotFoundError, match=r"missing\.png"):
        load_images(folder, DataConfig(labels_csv=str(labels)), "train")


def test_class_folders(bci_small: Path, tmp_path: Path) -> None:
    root = tmp_path / "folders"
    for path in sorted((bci_small / "IHC" / "train").glob("*.png")):
        score = path.stem.split("_")[-1]
        (root / score).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / score / f"slide{score[0]}_x0_y{path.stem[:5]}.png")
    assert detect_layout(root) == "folders"
    images = load_images(root, DataConfig(), "train")
    assert images.counts() == {"0": 8, "1+": 8, "2+": 8, "3+": 8}
    assert set(images.groups) == {"slide0", "slide1", "slide2", "slide3"}
    (root / "maybe").mkdir()
    with pytest.raises(DatasetError, match=r"'maybe'.*not a class"):
        load_images(root, DataConfig(), "train")


def test_missing_empty_and_unrecognised_folders(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_images(tmp_path / "nope", DataConfig())
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        load_images(tmp_path, DataConfig())
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        load_images(tmp_path / "notes.txt", DataConfig())
    (tmp_path / "IHC" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no labelled images"):
        load_images(tmp_path, DataConfig())
    (tmp_path / "IHC" / "train" / "patch.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="not named like a BCI image"):
        load_images(tmp_path, DataConfig())
    with pytest.raises(DatasetError, match="no HE folder"):
        load_images(tmp_path, DataConfig(stain="he"))


def test_unreadable_image_is_a_dataset_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read image"):
        read_rgb(bad)


def test_drop_blank_removes_glass_only_images(bci_small: Path, tmp_path: Path) -> None:
    root = tmp_path / "bci"
    shutil.copytree(bci_small, root)
    for i in range(3):
        write_image(root / "IHC" / "train" / f"9999{i}_train_2+.png", np.full((64, 64, 3), 242, np.uint8))
    kept = load_images(root, DataConfig(drop_blank=True), "train")
    assert len(kept) == 32 and kept.dropped_blank == 3
    assert len(load_images(root, DataConfig(), "train")) == 35


def test_split_is_stratified_seeded_and_keeps_slides_whole() -> None:
    labels = np.repeat(np.arange(4), 20)
    train, val = split_train_val(labels, [""] * 80, 0.25, seed=3)
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    assert np.array_equal(val, split_train_val(labels, [""] * 80, 0.25, seed=3)[1])
    assert not np.array_equal(val, split_train_val(labels, [""] * 80, 0.25, seed=4)[1])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(80))
    groups = [f"slide{i // 5}" for i in range(80)]  # 4 slides per class, 5 tiles each
    train, val = split_train_val(labels, groups, 0.25, seed=0)
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in val})
    assert sorted(set(labels[val].tolist())) == [0, 1, 2, 3]
    assert len(split_train_val(labels, groups, 0.0, seed=0)[1]) == 0
