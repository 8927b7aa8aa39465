from __future__ import annotations

from pathlib import Path

import pytest

from wsi_her2.config import GridConfig, LoaderConfig, TissueConfig, load_config_file
from wsi_her2.errors import ConfigError, InputNotFoundError


def test_invalid_values_are_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="min_tissue_fraction"):
        GridConfig(min_tissue_fraction=1.5)
    with pytest.raises(ConfigError, match="overlap_px"):
        GridConfig(tile_size_px=512, overlap_px=512)
    with pytest.raises(ConfigError, match="batch_size"):
        LoaderConfig(batch_size=0)


def test_unknown_keys_in_a_config_section_are_named() -> None:
    with pytest.raises(ConfigError, match="tile_szie"):
        GridConfig.from_dict({"tile_szie": 512})


def test_round_trip_through_a_dict_keeps_every_value() -> None:
    cfg = GridConfig(tile_size_px=512, target_mpp=0.5, overlap_px=64, min_tissue_fraction=0.4)
    assert GridConfig.from_dict(cfg.to_dict()) == cfg


def test_none_overrides_mean_option_not_given() -> None:
    assert TissueConfig.from_dict({"mask_mpp": 8.0}, mask_mpp=None).mask_mpp == 8.0


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.toml", "[grid]\ntile_size_px = 512\n"),
        ("c.yaml", "grid:\n  tile_size_px: 512\n"),
        ("c.json", '{"grid": {"tile_size_px": 512}}'),
    ],
)
def test_config_files_in_toml_yaml_and_json(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert GridConfig.from_dict(load_config_file(path)["grid"]).tile_size_px == 512


def test_bad_config_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_config_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[grid\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(broken)
    odd = tmp_path / "c.ini"
    odd.write_text("x")
    with pytest.raises(ConfigError, match="unknown config file type") as caught:
        load_config_file(odd)
    assert ".toml" in caught.value.user_message()
