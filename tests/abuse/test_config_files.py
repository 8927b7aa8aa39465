"""Malformed config files: syntax errors, wrong types, unknown keys, NaN, infinities, bombs.

Each is refused before any slide is opened: exit 2, one line naming the section and the setting,
nothing written. The checks live in the config dataclasses, so they hold for library users and
whatever shape the command line takes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.abuse.conftest import CliResult, assert_one_line

_LAUGHS = "[" + ", ".join(
    [f"&l0 [{', '.join(['lol'] * 9)}]"] + [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 9)]
) + "]"  # fmt: skip

CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (suffix, text, needles in the one line)
    "toml syntax": (".toml", "[tissue\nclose_um = 3\n", ("cannot parse config file",)),
    "yaml syntax (a multi-line parser message)": (".yaml", "tissue:\n  close_um: [1, 2\n  x: 3\n", ("cannot parse",)),
    "json syntax": (".json", '{"tissue": {"close_um": 3,}}', ("cannot parse config file",)),
    "json nested 100,000 deep": (".json", '{"tissue": {"close_um": ' + "[" * 100_000 + "]" * 100_000 + "}}",
                                 ("cannot parse config file",)),
    "unknown suffix": (".ini", "[tissue]\nclose_um = 3\n", ("unknown config file type",)),
    "a list, not sections": (".yaml", "- tissue\n- grid\n", ("must hold a mapping of sections",)),
    "unknown section": (".toml", "[tisue]\nclose_um = 3\n", ("unknown section(s) 'tisue'",)),
    "unknown key": (".toml", "[tissue]\nclose_mu = 3\n", ("unknown TissueConfig setting(s): close_mu",)),
    "non-text key": (".yaml", "tissue:\n  1: 2\n", ("unknown TissueConfig setting(s): 1",)),
    "section not a table": (".toml", "tissue = 5\n", ("[tissue] must be a table of settings",)),
    "flag as text": (".toml", '[tissue]\nreject_pen = "no"\n', ("[tissue] reject_pen must be true or false",)),
    "flag 'false' as text": (".yaml", 'loader:\n  pixel_check: "false"\n', ("[loader] pixel_check must be true",)),
    "count as a flag": (".toml", "[loader]\nworkers = true\n", ("[loader] workers must be a whole number",)),
    "count as a float": (".toml", "[grid]\ntile_size_px = 256.0\n", ("[grid] tile_size_px must be a whole number",)),
    "count as text": (".yaml", "tissue:\n  min_saturation: x\n", ("[tissue] min_saturation must be a whole number",)),
    "number as text": (".toml", '[grid]\ntarget_mpp = "0.5"\n', ("[grid] target_mpp must be a finite number",)),
    "text as a number": (".json", '{"inference": {"precision": 5}}', ("[inference] precision must be text",)),
    "text as a list": (".json", '{"aggregate": {"rule": ["asco_cap"]}}', ("[aggregate] rule must be text",)),
    "toml inf": (".toml", "[tissue]\nclose_um = inf\n", ("[tissue] close_um must be a finite number, got inf",)),
    "toml nan": (".toml", "[tissue]\nmin_texture = nan\n", ("[tissue] min_texture must be a finite number",)),
    "yaml .inf": (".yaml", "loader:\n  min_blur_score: .inf\n", ("[loader] min_blur_score must be a finite number",)),
    "json NaN": (".json", '{"grid": {"min_tissue_fraction": NaN}}', ("[grid] min_tissue_fraction must be a finite",)),
    "json Infinity": (".json", '{"aggregate": {"positive_3plus": Infinity}}', ("[aggregate] positive_3plus",)),
    "DAB threshold nan": (".toml", "[dab]\nmembrane_od_3plus = nan\n", ("[dab] membrane_od_3plus must be a finite",)),
    "huge closing radius": (".toml", "[tissue]\nclose_um = 1e12\n", ("close_um must be at most 1000",)),
    "huge loader batch": (".toml", "[loader]\nbatch_size = 1000000000\n", ("batch_size must be within 1..4096",)),
    "huge prefetch": (".toml", "[loader]\nprefetch_batches = 1000000\n", ("prefetch_batches must be within 1..64",)),
    "huge model batch": (".toml", "[inference]\nbatch_size = 1000000000\n", ("batch_size must be within 1..8192",)),
    "yaml alias bomb (9^9 elements)": (".yaml", f"tissue:\n  reject_pen: {_LAUGHS}\n",
                                       ("[tissue] reject_pen must be true or false",)),
}  # fmt: skip


# Sections only `score` reads (`tile` has no model, no slide-level rule).
_SCORE_ONLY = ("[inference]", "[aggregate]", "[dab]", '"inference"', '"aggregate"', "huge model batch")


def _runs() -> list[tuple[str, str]]:
    runs = []
    for case, (_, text, needles) in CASES.items():
        score_only = any(s in text or s in needles[0] or s == case for s in _SCORE_ONLY)
        runs += [(case, command) for command in (("score",) if score_only else ("tile", "score"))]
    return runs


@pytest.mark.parametrize(("case", "command"), _runs())
def test_a_malformed_config_file_is_one_line_exit_2_before_the_slide_is_read(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path, case: str, command: str
) -> None:
    suffix, text, needles = CASES[case]
    config = tmp_path / f"config{suffix}"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    result = cli(command, small_slide, "-o", out, "--config", config, "--quiet")
    assert time.perf_counter() - t0 < 10
    line = assert_one_line(result, 2, *needles)
    assert len(line) < 600
    assert not out.exists()


def test_a_good_config_file_is_used(cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path) -> None:
    import json

    config = tmp_path / "config.yaml"
    config.write_text("tissue:\n  close_um: 8.0\ngrid:\n  min_tissue_fraction: 0.5\nloader:\n  workers: 0\n")
    result = cli("tile", small_slide, "-o", tmp_path / "out", "--config", config, "--quiet")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["tissue"]["close_um"] == 8.0
    assert manifest["config"]["grid"]["min_tissue_fraction"] == 0.5


@pytest.mark.parametrize(
    ("target", "values"),
    [
        ("wsi_her2.config:TissueConfig", {"close_um": math.inf}),
        ("wsi_her2.config:TissueConfig", {"reject_pen": "no"}),
        ("wsi_her2.config:LoaderConfig", {"pixel_check": "false"}),
        ("wsi_her2.config:GridConfig", {"tile_size_px": True}),
        ("wsi_her2.config:GridConfig", {"target_mpp": math.nan}),
        ("wsi_her2.config:InferenceConfig", {"device": 5}),
        ("wsi_her2.aggregate:AggregateConfig", {"seed": 1.5}),
        ("wsi_her2.training.config:TrainConfig", {"lr": math.nan}),
        ("wsi_her2.training.config:TrainConfig", {"head_hidden": (10**9,)}),
        ("wsi_her2.training.config:DataConfig", {"val_fraction": math.inf}),
    ],
)
def test_library_side_construction_refuses_the_same_values(target: str, values: dict) -> None:
    import importlib

    from wsi_her2.errors import ConfigError

    module, name = target.split(":")
    config_class = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=next(iter(values))):
        config_class(**values)
