"""Zero, negative, NaN, infinite and huge values for every numeric option of every command.

The options are not listed here: they are found by walking the click command tree of
``wsi_her2_cli.main.cli``, so an option added later is checked too. For each int or float
parameter:

* its type has a finite lower and upper bound (an ``IntRange`` or a :class:`FiniteFloat`);
* each hostile value (0, -1, nan, inf, -inf, 1e308, 10**30) outside the declared range is refused
  while the line is parsed: exit 2, one line on stderr naming the option and its range, no
  traceback, nothing created in the output folder;
* each hostile value inside the range is a meaning the option documents (``--workers 0``, ...),
  listed in :data:`ACCEPTED` with that meaning; a representative few run for real on a small slide
  and succeed or stop with the documented exit code.

docs/abuse.md ("Numeric options") has what each value did before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from tests.abuse.conftest import CliResult
from wsi_her2_cli.main import cli as GROUP
from wsi_her2_cli.options import FiniteFloat

HOSTILE = ("0", "-1", "nan", "inf", "-inf", "1e308", str(10**30))

# The hostile values that are inside an option's declared range, with what they mean. A new
# option that accepts one must say here what it means (test_every_accepted_value_is_a_documented_meaning).
ACCEPTED: dict[tuple[str, str], str] = {
    ("--overlap", "0"): "tiles edge to edge (the default)",
    ("--min-tissue", "0"): "keep every tile the tissue mask touches",
    ("--workers", "0"): "read tiles (decode images) in this process",
    ("--min-blur", "0"): "no blur check",
    ("--hed-jitter", "0"): "no stain augmentation (the default, as the paper)",
    ("--val-fraction", "0"): "no validation split",
    ("--min-image-tissue", "0"): "with --drop-blank: drop only images without any tissue",
    ("--rerun", "0"): "skip the rerun check",
    ("--roi-check", "0"): "skip the ROI check",
    ("--seed", "0"): "the default seed",
    ("--port", "0"): "a free port",
    ("--top", "0"): "no top tiles in the report",
}


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            for sub, inner in _commands(command, click.Context(command, parent=ctx, info_name=name)):
                yield f"{name} {sub}", inner
        else:
            yield name, command


def numeric_parameters() -> list[tuple[str, click.Parameter]]:
    """(command path, parameter) for every int or float parameter of every command, options and arguments."""
    found = []
    for path, command in _commands(GROUP, click.Context(GROUP, info_name="wsi-her2")):
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                found.append((path, param))
    return found


PARAMETERS = numeric_parameters()


def _takes_a_value(param: click.Parameter) -> bool:
    return not (isinstance(param, click.Option) and (param.count or param.is_flag))


def _flag(param: click.Parameter) -> str:
    return max(param.opts, key=len)


def _accepts(param: click.Parameter, value: str) -> bool:
    try:
        param.type.convert(value, param, None)
    except click.BadParameter:
        return False
    return True


def _cases(accepted: bool) -> list[tuple[str, str, str]]:
    return [
        (path, _flag(param), value)
        for path, param in PARAMETERS
        if _takes_a_value(param)
        for value in HOSTILE
        if _accepts(param, value) == accepted
    ]


REFUSED = _cases(accepted=False)


def test_the_walk_finds_the_numeric_options_of_every_command() -> None:
    commands = {path for path, _ in PARAMETERS}
    assert commands == set(GROUP.list_commands(click.Context(GROUP)))  # -v is on all of them
    flags = {(path, _flag(p)) for path, p in PARAMETERS}
    assert {("score", "--mpp"), ("validate", "--seed"), ("batch", "--jobs"), ("view", "--port")} <= flags
    assert len(PARAMETERS) > 60 and len(REFUSED) > 300


@pytest.mark.parametrize(("command", "param"), PARAMETERS, ids=[f"{c}:{_flag(p)}" for c, p in PARAMETERS])
def test_every_numeric_parameter_has_finite_bounds(command: str, param: click.Parameter) -> None:
    kind = param.type
    assert isinstance(kind, (click.IntRange, click.FloatRange)), f"{command} {_flag(param)}: {kind!r} has no bounds"
    assert kind.min is not None and kind.max is not None, f"{command} {_flag(param)}: {kind!r} is open-ended"
    assert math.isfinite(kind.min) and math.isfinite(kind.max) and kind.min < kind.max
    if isinstance(kind, click.FloatRange):  # click's own FloatRange lets nan through any bounds
        assert isinstance(kind, FiniteFloat), f"{command} {_flag(param)}: use FiniteFloat"
        assert not _accepts(param, "nan") and not _accepts(param, "inf") and not _accepts(param, "-inf")
    if not _takes_a_value(param):  # a count (-v): clamped, never an error
        assert isinstance(param, click.Option) and param.count and kind.clamp


def test_every_accepted_value_is_a_documented_meaning() -> None:
    accepted = {(flag, value) for _, flag, value in _cases(accepted=True)}
    assert accepted == set(ACCEPTED), accepted ^ set(ACCEPTED)


def _arguments(command: str, root: Path) -> list[str]:
    """The command's arguments (paths under ``root``) and ``-o root/out`` where it has one."""
    out = str(root / "out")
    return {
        "info": [str(root / "slide.svs")],
        "tile": [str(root / "slide.svs"), "-o", out],
        "score": [str(root / "slide.svs"), "-o", out],
        "explain": ["dab", str(root / "slide.svs"), "-o", out],
        "batch": [str(root / "slides"), "-o", out],
        "validate": [str(root / "cases.csv"), "-o", out],
        "train": [str(root / "data"), "-o", out],
        "evaluate": [str(root / "model"), str(root / "data"), "-o", out],
        "view": [str(root / "result")],
        "report": [str(root / "result"), "-o", str(root / "out" / "report.html")],
    }[command]


@pytest.mark.parametrize(("command", "flag", "value"), REFUSED, ids=[f"{c}:{f}={v}" for c, f, v in REFUSED])
def test_a_value_outside_the_range_is_refused_on_one_line(
    cli: Callable[..., CliResult], tmp_path: Path, command: str, flag: str, value: str
) -> None:
    # The inputs need not exist: the value is refused while the line is parsed, before any is opened.
    result = cli(command, *_arguments(command, tmp_path), f"{flag}={value}")
    assert result.exit_code == 2, result.stderr
    lines = result.message_lines
    assert len(lines) == 1 and lines[0].startswith("wsi-her2: error: "), result.stderr
    assert f"'{flag}'" in lines[0] and "range" in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_reads_well(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli("score", tmp_path / "s.svs", "-o", tmp_path / "out", "--mpp", "nan")
    assert result.message_lines == [
        "wsi-her2: error: Invalid value for '--mpp': 'nan' is not a finite number in the range "
        "0.05<=x<=20.0. (see 'wsi-her2 score --help')"
    ]
    result = cli("validate", tmp_path / "c.csv", "-o", tmp_path / "out", "--seed", "-1")
    assert result.message_lines == [
        "wsi-her2: error: Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295. "
        "(see 'wsi-her2 validate --help')"
    ]


def test_help_shows_the_ranges(cli: Callable[..., CliResult]) -> None:
    text = " ".join(cli("score", "--help").stdout.split())
    assert "[0.05<=x<=20.0]" in text and "[0<=x<=1000000]" in text and "[0<=x<=16383]" in text


# -- values inside the ranges, for real ------------------------------------------------------------


def _one_line(result: CliResult, exit_code: int, words: str) -> None:
    assert result.exit_code == exit_code, result.stderr[-3000:]
    lines = [line for line in result.message_lines if line.startswith("wsi-her2: ")]
    assert len(lines) == 1 and words in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def _score(cli: Callable[..., CliResult], slide: Path, out: Path, *options: object) -> CliResult:
    return cli("score", slide, "-o", out, "-q", "--workers", "0", *options)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_zero_workers_overlap_tissue_and_blur_score_every_tile(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    result = _score(cli, small_slide, tmp_path / "o", "--overlap", 0, "--min-tissue", 0, "--min-blur", 0)
    assert result.exit_code == 0, result.stderr
    tiles = _report(tmp_path / "o")["tiles"]  # none dropped by the mask or the pixel checks
    assert tiles["on_tissue"] == 16 and not {"blur", "background"} & set(tiles["dropped"]), tiles
    assert tiles["scored"] + sum(tiles["dropped"].values()) == 16 and tiles["scored"] > 0
    assert cli("report", tmp_path / "o", "--top", 0, "-q").exit_code == 0  # no top tiles
    assert (tmp_path / "o" / "report.html").stat().st_size > 0


def test_the_largest_fraction_and_the_coarsest_and_finest_grid(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    # Tissue everywhere: --min-tissue 1 keeps every tile on the grid.
    assert _score(cli, small_slide, tmp_path / "a", "--min-tissue", 1).exit_code == 0
    assert _report(tmp_path / "a")["tiles"]["on_tissue"] == 16
    # One 16384-px tile over a 2048-px slide (with the largest overlap it allows) or 20-µm/px tiles
    # of 1024 px (20 mm): no tile is 25% tissue, exit 6 with a report that says so.
    for name, options in (
        ("b", ("--tile-size", 16384)),
        ("c", ("--tile-size", 16384, "--overlap", 16383)),
        ("d", ("--target-mpp", 20)),
    ):
        _one_line(_score(cli, small_slide, tmp_path / name, *options), 6, "no tile has at least 25% tissue")
        assert (tmp_path / name / "report.json").exists()
    # The strictest blur check drops every tile: not a score of 0 made on nothing, but exit 6 and a
    # report that says no tile could be scored and why.
    _one_line(_score(cli, small_slide, tmp_path / "f", "--min-blur", 1_000_000), 6,
              "no tile could be scored: all 16 tiles on tissue were dropped (blur: 16)")  # fmt: skip
    report = _report(tmp_path / "f")
    assert report["status"] == "no_tissue" and report["result"] is None and "blur: 16" in report["message"]
    # The finest µm/px the slide can claim: 0.05 instead of its 0.5, ten times less tissue than
    # the mask can find (exit 6, said), not a 10x larger slide in memory.
    _one_line(_score(cli, small_slide, tmp_path / "e", "--mpp", 0.05), 6, "no tissue was found")


def test_cross_field_rules_stop_with_one_line_before_anything_is_written(
    cli: Callable[..., CliResult], small_slide: Path, tmp_path: Path
) -> None:
    # The largest overlap is refused against the tile in use (1024 px by default).
    for command in ("score", "tile"):
        result = cli(command, small_slide, "-o", tmp_path / command, "--overlap", 16383)
        _one_line(result, 2, "overlap_px must be >= 0 and smaller than the tile (1024 px)")
        assert not (tmp_path / command).exists()
    config = tmp_path / "c.toml"
    config.write_text("[grid]\ntile_size_px = 256\n")
    result = cli("score", small_slide, "-o", tmp_path / "o", "--config", config, "--overlap", 256)
    _one_line(result, 2, "smaller than the tile (256 px)")
    assert not (tmp_path / "o").exists()


def test_a_count_beyond_its_range_is_clamped(cli: Callable[..., CliResult], small_slide: Path) -> None:
    result = cli("info", small_slide, "--json", "-vvvvvvvv")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["mpp_x"] == 0.5


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.validation.helpers import write_case_image, write_cases_csv

    folder = tmp_path_factory.mktemp("cases")
    write_case_image(folder / "c0.png", "0", seed=1, size_px=512, margin_px=64)
    write_case_image(folder / "c2.png", "2+", seed=2, size_px=512, margin_px=64)
    rows = [["a", "c0.png", "0", 0.5], ["b", "c2.png", "2+", 0.5]]
    return write_cases_csv(folder / "cases.csv", ["Case", "Slide", "Pathologist score", "mpp"], rows)


@pytest.mark.slow
def test_validate_with_the_largest_seed_and_the_checks_off_or_on(
    cli: Callable[..., CliResult], two_cases: Path, tmp_path: Path
) -> None:
    common = ("--workers", 0, "--bootstrap", 100, "-q", "--seed", 2**32 - 1)
    result = cli("validate", two_cases, "-o", tmp_path / "off", *common, "--rerun", 0, "--roi-check", 0)
    assert result.exit_code == 0, result.stderr
    # One case drawn for the rerun with the largest seed numpy takes (a negative one raised ValueError).
    result = cli("validate", two_cases, "-o", tmp_path / "on", *common, "--rerun", 1)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "on" / "validation.json").exists()


@pytest.mark.models
@pytest.mark.slow
def test_train_with_the_largest_seed_no_validation_split_and_no_jitter(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    from tests.training.helpers import SIZE_PX, synthetic_bci

    data = synthetic_bci(tmp_path, 8)
    result = cli(
        "train", data, "-o", tmp_path / "run", "--arch", "test_resnet", "--no-pretrained", "--input-size", SIZE_PX,
        "--workers", 0, "--device", "cpu", "--epochs", 1, "-q",
        "--seed", 2**32 - 1, "--val-fraction", 0, "--hed-jitter", 0, "--lr", 1,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "run" / "model.safetensors").stat().st_size > 0
