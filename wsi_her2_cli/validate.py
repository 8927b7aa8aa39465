"""wsi-her2 validate CASES.csv -o OUT: concordance with a lab's scored cases, the CAP QIA checks, calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import VALIDATE, common_options, config_option, score_settings, table_options


@click.command()
@click.argument("cases_path", metavar="CASES.csv", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@table_options(VALIDATE)
@click.option("--json", "as_json", is_flag=True, help="Print validation.json instead of a summary.")
@config_option
@common_options
def validate(cases_path: Path, out_dir: Path, as_json: bool, quiet: bool, verbose: int, **options: Any) -> int:
    """Score a lab's own scored cases and report the agreement, as the CAP guideline on QIA asks.

    \b
    CASES.csv has a header row: slide, pathologist_score (0, 1+, 2+, 3+), and optionally
    case (id), ish (positive / negative / blank), mpp, roi (GeoJSON); paths relative to the CSV.
    Writes into OUT:
      cases/<case>/       each case's score folder (`wsi-her2 view` opens it)
      checks/             the rerun and ROI checks' score folders
      validation.json     confusion matrix, agreement and kappa with bootstrap intervals, 0 vs >=1+,
                          <=1+ vs >=2+, ISH concordance, Spearman of the index, CAP checks, metadata
      validation.html     the same on one page; validation.png the figure; cases.csv the case table
      calibration.json    with --calibrate: settings for `score --dab-config`, fitted by cross-validation
    A bad case list stops before anything is written. Cases that fail to score are recorded and
    the run goes on; the exit code is then 12.
    """
    from wsi_her2.errors import BatchFailedError
    from wsi_her2.outputs.schema import VALIDATION_CASES_CSV, VALIDATION_HTML
    from wsi_her2.validation.cases import read_cases
    from wsi_her2.validation.runner import ValidationOptions, run_validation
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging

    setup_logging(verbose, quiet)
    settings = score_settings(VALIDATE, options)
    case_list = read_cases(cases_path, mpp_fallback=options["mpp"])
    validation = ValidationOptions.from_options(options, settings)
    with RichProgress(enabled=not quiet and not as_json) as progress:
        result = run_validation(case_list, out_dir, settings, validation, progress=progress)
    if as_json:
        click.echo(result.files["report"].read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        _print_summary(result.summary, result.out_dir / VALIDATION_HTML, err_console)
    if result.calibration_error is not None:
        raise result.calibration_error
    if result.failed:
        raise BatchFailedError(
            f"{len(result.failed)} of {len(case_list)} cases could not be scored ({', '.join(result.failed[:3])})",
            hint=f"their errors are in {result.out_dir / VALIDATION_CASES_CSV}; the figures are over the other cases",
        )
    return 0


def _fmt(entry: dict[str, Any] | None, percent: bool = False) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    value = entry["value"]
    text = f"{value:.0%}" if percent else f"{value:.2f}"
    ci = entry.get("ci95")
    if ci:
        text += f" ({ci[0]:.0%}–{ci[1]:.0%})" if percent else f" ({ci[0]:.2f}–{ci[1]:.2f})"
    if "successes" in entry:
        text += f" [{entry['successes']}/{entry['n']}]"
    return text


def _print_summary(summary: dict[str, Any], page: Path, console: Any) -> None:
    from rich.table import Table

    from wsi_her2.validation.report import algorithm_line

    c = summary["concordance"]
    table = Table(show_header=False, title=f"validation of {summary['n_scored']} cases", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("algorithm", algorithm_line(summary))
    table.add_row("exact agreement", _fmt(c["exact_agreement"], True))
    table.add_row("quadratic-weighted kappa", _fmt(c["quadratic_weighted_kappa"]))
    for split in c["splits"].values():
        table.add_row(
            split["label"],
            f"sensitivity {_fmt(split['sensitivity'], True)}, specificity {_fmt(split['specificity'], True)}",
        )
    table.add_row("Spearman (index)", _fmt(summary["index_vs_pathologist_spearman"]))
    table.add_row("status after reflex ISH", _fmt(summary["ish"]["her2_status_after_reflex_ish"]["overall"], True))
    for key, label in (("rerun", "rerun identical"), ("roi", "ROI check")):
        check = summary["checks"].get(key)
        if check is None:
            table.add_row(label, "not run")
        elif key == "rerun":
            table.add_row(label, f"{check['identical']} of {check['cases_checked']} cases")
        else:
            table.add_row(
                label,
                f"{len(check['cases_with_a_score_change'])} of {check['cases_checked']} cases "
                f"change score at ±{check['jitter_um']:g} µm",
            )
    calibration = summary.get("calibration")
    if calibration and "error" in calibration:
        table.add_row("calibration", f"not made: {calibration['error']}")
    elif calibration:
        for name, entry in calibration["spaces"].items():
            cross, default = entry["cross_validated"], entry["defaults_on_these_cases"]
            table.add_row(
                f"calibration: {name}",
                f"{calibration['method']}: cross-validated agreement {_fmt(cross['exact_agreement'], True)}, "
                f"kappa {_fmt(cross['quadratic_weighted_kappa'])}; the defaults: "
                f"{_fmt(default['exact_agreement'], True)}, kappa {_fmt(default['quadratic_weighted_kappa'])}",
            )
        table.add_row(
            f"calibrated settings ({calibration['file']})",
            ", ".join(f"{k} {v['default']:g} -> {v['calibrated']:g}" for k, v in calibration["departs_from"].items())
            or "the defaults",
        )
    for note in summary["notes"]:
        table.add_row("note", note)
    table.add_row("report", str(page))
    console.print(table)
