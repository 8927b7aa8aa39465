"""The option table: each option once, where its value goes, and a new option is one entry."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from wsi_her2_cli.main import COMMANDS
from wsi_her2_cli.options import (
    FILE_SECTIONS,
    OPTIONS,
    SCORE,
    _opt,
    score_settings,
    settings_sections,
    table_options,
)


def test_no_command_has_an_option_twice_and_every_setting_is_a_known_place() -> None:
    from wsi_her2.settings import SECTIONS

    for command in COMMANDS:
        flags = [flag for option in OPTIONS if command in option.commands for flag in option.flags]
        assert len(flags) == len(set(flags)), command
    places = {"model", "backend", "check_stain", *SECTIONS, "data", "train", FILE_SECTIONS}
    assert {o.setting.split(".")[0] for o in OPTIONS if o.setting} <= places


def test_options_go_where_the_table_says_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[grid]\ntile_size_px = 512\noverlap_px = 8\n[aggregate]\nrule = "asco_cap"\n')
    params = {"config_path": config, "tile_size_px": 256, "overlap_px": None, "no_pen_filter": True,
              "no_stain_check": False, "model": "dab", "rule": None, "workers": 0}  # fmt: skip
    settings = score_settings(SCORE, params)
    assert settings.grid.tile_size_px == 256 and settings.grid.overlap_px == 8  # the line wins; the file fills in
    assert settings.grid_user_set == {"tile_size_px", "overlap_px"}
    assert settings.tissue.reject_pen is False and settings.check_stain is True
    assert settings.aggregate.rule == "asco_cap" and settings.loader.workers == 0


def test_a_new_option_is_one_entry(tmp_path: Path) -> None:
    """E.g. a --gate-config FILE of the tumour gate's settings for score, batch and explain: one line in the table."""
    from wsi_her2.config import load_config_file

    entry = _opt("gate_config", "--gate-config", ("score", "batch", "explain"), "dab",
                 lambda path: {"tumour_gate": load_config_file(path)["dab"]["tumour_gate"]} if path else None,
                 type=click.Path(path_type=Path), default=None, help="The tumour gate's settings.")  # fmt: skip
    table = (*OPTIONS, entry)
    gate_file = tmp_path / "gate.toml"
    gate_file.write_text("[dab.tumour_gate]\nradius_um = 33.0\n")

    @click.command()
    @table_options(SCORE, table)
    def command(**params: object) -> None:
        click.echo(score_settings(SCORE, params, table=table).dab.tumour_gate.radius_um)

    result = CliRunner().invoke(command, ["--gate-config", str(gate_file)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "33.0"
    sections, _ = settings_sections("tile", {"gate_config": gate_file}, table)
    assert "dab" not in sections  # tile does not offer it


def test_train_calls_its_blank_image_threshold_by_another_name_than_the_tile_mask_s() -> None:
    train_flags = {f for o in OPTIONS if "train" in o.commands for f in o.flags}
    assert "--min-image-tissue" in train_flags and "--min-tissue" not in train_flags
    assert any("--min-tissue" in o.flags and o.setting == "grid.min_tissue_fraction" for o in OPTIONS)


@pytest.mark.parametrize("command", ["score", "batch", "tile", "explain", "validate"])
def test_every_table_option_of_a_command_is_in_its_help(command: str) -> None:
    import importlib

    module, name = COMMANDS[command].split(":")
    cli = getattr(importlib.import_module(module), name)
    text = CliRunner().invoke(cli, ["--help"], terminal_width=200).output
    for option in OPTIONS:
        if command in option.commands:
            assert option.flags[0].split("/")[0] in text, option.flags


def test_a_dab_config_file_applies_over_the_config_file_and_under_the_options_on_the_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[dab]\nmembrane_od_1plus = 0.05\nwork_mpp = 0.4\n[aggregate]\nlow_1plus = 0.2\n")
    calibration = tmp_path / "cal.toml"
    calibration.write_text('[dab]\nmembrane_od_1plus = 0.03\n[aggregate]\nlow_1plus = 0.05\nrule = "cells"\n')
    params = {"config_path": config, "dab_config": calibration, "model": "dab", "rule": "asco_cap", "workers": 0}
    settings = score_settings(SCORE, params)
    assert settings.dab.membrane_od_1plus == 0.03 and settings.dab.work_mpp == 0.4  # over the file, which fills in
    assert settings.aggregate.low_1plus == 0.05 and settings.aggregate.rule == "asco_cap"  # the line wins
    assert settings.calibration is not None and settings.calibration["overrides"]["dab"] == {"membrane_od_1plus": 0.03}
    plain = score_settings(SCORE, {**params, "dab_config": None})
    assert plain.calibration is None and plain.fingerprint() != settings.fingerprint()
