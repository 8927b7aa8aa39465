"""The validation report as one self-contained HTML page (inline styles, the figure as a data URI).

Links to the case folders are relative, so they work when the page is opened inside OUT.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from wsi_her2.her2 import SCORES_4
from wsi_her2.outputs.atomic import write_text
from wsi_her2.outputs.schema import REPORT
from wsi_her2.validation.report import algorithm_line


def _e(value: Any) -> str:
    return html.escape("–" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 2, percent: bool = False) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{max(0, digits - 2)}%}" if percent else f"{value:.{digits}f}"


def estimate(entry: dict[str, Any] | None, percent: bool = False) -> str:
    """An estimate as text: value, 95% interval and method, or why there is no interval."""
    if not entry:
        return "–"
    text = _num(entry.get("value"), 3 if percent else 2, percent)
    ci = entry.get("ci95")
    if ci:
        text += f" (95% CI {_num(ci[0], 3 if percent else 2, percent)}–{_num(ci[1], 3 if percent else 2, percent)}"
        text += f"; {entry.get('ci_method', '')})"
    if "successes" in entry:
        text += f" [{entry['successes']}/{entry['n']}]"
    if entry.get("note"):
        text += f" — {entry['note']}"
    return _e(text)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="list"><tr>{head}</tr>{body}</table>'


def _headline(summary: dict[str, Any]) -> str:
    c = summary["concordance"]
    ish = summary["ish"]["her2_status_after_reflex_ish"]
    rows = [
        ["exact agreement (4 categories)", estimate(c["exact_agreement"], True)],
        [
            "Wilson 95% CI of exact agreement",
            _e(" – ".join(_num(v, 3, True) for v in c["exact_agreement"]["wilson_ci95"] or [])),
        ],
        ["within one category", estimate(c["within_one_category"], True)],
        ["quadratic-weighted kappa", estimate(c["quadratic_weighted_kappa"])],
    ]
    for split in c["splits"].values():
        rows.append([_e(f"{split['label']}: sensitivity"), estimate(split["sensitivity"], True)])
        rows.append([_e(f"{split['label']}: specificity"), estimate(split["specificity"], True)])
    rows.append(["Spearman, index vs pathologist score", estimate(summary["index_vs_pathologist_spearman"])])
    rows.append(["HER2 status after reflex ISH: overall", estimate(ish["overall"], True)])
    rows.append(["positive percent agreement", estimate(ish["positive_percent_agreement"], True)])
    rows.append(["negative percent agreement", estimate(ish["negative_percent_agreement"], True)])
    return _table(["figure", "value"], rows)


def _confusion(summary: dict[str, Any]) -> str:
    matrix = summary["concordance"]["confusion_matrix"]
    rows = [[f"<b>{_e(SCORES_4[i])}</b>"] + [_e(v) for v in row] for i, row in enumerate(matrix)]
    return _table(["pathologist ↓ / wsi-her2 →", *SCORES_4], rows)


def _ish(summary: dict[str, Any]) -> str:
    ish = summary["ish"]
    rows = []
    for who in ("tool", "pathologist"):
        entry = ish["two_plus_calls"][who]
        versus = ish[f"{who}_vs_ish"]
        rows.append(
            [
                _e("wsi-her2" if who == "tool" else "pathologist"),
                _e(entry["with_ish"]),
                _e(entry["ish_positive"]),
                _e(entry["ish_negative"]),
                _e(entry["without_ish"]),
                estimate(versus["concordance_of_negative_and_positive_calls"], True),
                _e(versus["ish_positive_called_0_or_1plus"]),
                _e(versus["ish_negative_called_3plus"]),
            ]
        )
    header = [
        "IHC by",
        "2+ calls with ISH",
        "ISH+",
        "ISH−",
        "2+ without ISH",
        "0/1+ and 3+ calls agreeing with ISH",
        "ISH+ called 0/1+",
        "ISH− called 3+",
    ]
    return f"<p>{_e(ish['cases_with_ish'])} scored cases have an ISH result.</p>" + _table(header, rows)


def _checks(summary: dict[str, Any]) -> str:
    checks = summary["checks"]
    c = summary["concordance"]
    rows = [
        [
            "2: agreement with an alternative method",
            _e(f"pathologist IHC on {c['n']} cases, ISH on {summary['ish']['cases_with_ish']}: see above"),
            "–",
        ]
    ]
    for key in ("rerun", "roi"):
        check = checks.get(key)
        if check is None:
            rows.append([_e("3: rerun" if key == "rerun" else "4: ROI"), "not run", "–"])
            continue
        if key == "rerun":
            result = f"{check['identical']} of {check['cases_checked']} cases identical"
        else:
            spread = check["index_spread_max"]
            result = (
                f"{len(check['cases_with_a_score_change'])} of {check['cases_checked']} cases change score; "
                f"largest index spread {_num(spread, 1)}"
            )
        rows.append(
            [
                _e(check["statement"]),
                _e(f"{result}. {check['method']}"),
                "passed" if check["passed"] else "<b>not passed</b>",
            ]
        )
    return _table(["CAP QIA statement", "result", "verdict"], rows)


def _calibration(cal: dict[str, Any] | None) -> str:
    if not cal:
        return ""
    if "error" in cal:
        return f'<h2>Calibration</h2><p class="warn">Not made: {_e(cal["error"])}</p>'
    params = sorted(set(cal["defaults"]) | set(cal["fitted"]))
    rows = [[_e(k), _e(cal["defaults"].get(k)), _e(cal["fitted"].get(k))] for k in params]
    figures = [
        [_e(label), estimate(cal[key]["exact_agreement"], True), estimate(cal[key]["quadratic_weighted_kappa"])]
        for key, label in (
            ("cross_validated", "cross-validated (the agreement to expect)"),
            ("defaults_on_these_cases", "defaults on these cases"),
            ("fitted_on_all_cases", "fitted on all cases (apparent, optimistic)"),
        )
    ]
    warnings = "".join(f'<p class="note">{_e(w)}</p>' for w in cal["warnings"])
    spaces = [
        [
            _e(name),
            _e(entry["n_candidates"]),
            estimate(entry["cross_validated"]["exact_agreement"], True),
            estimate(entry["cross_validated"]["quadratic_weighted_kappa"]),
            estimate(entry["defaults_on_these_cases"]["exact_agreement"], True),
            estimate(entry["defaults_on_these_cases"]["quadratic_weighted_kappa"]),
            _e(", ".join(f"{k} {v['default']:g} → {v['calibrated']:g}" for k, v in entry["departs_from"].items())
               or "the defaults"),
        ]
        for name, entry in (cal.get("spaces") or {}).items()
    ]  # fmt: skip
    header = ["space", "candidates", "cross-validated agreement", "cross-validated kappa", "defaults' agreement",
              "defaults' kappa", "fitted on all cases"]  # fmt: skip
    return (
        f"<h2>Calibration ({_e(cal['method'])}, {_e(cal['folds'])} folds)</h2>"
        f"<p>Written to <code>{_e(cal['file'])}</code> (sha256 {_e(cal['sha256'][:16])}…). {_e(cal['use'])}.</p>"
        + _table([f"[{cal['section']}]", "default", "calibrated"], rows)
        + _table(["", "exact agreement", "quadratic-weighted kappa"], figures)
        + f"<p>Folds choosing the final settings: {_num(cal['selection_stability'], 2, True)}</p>"
        + (f"<h3>Each space on the same cases</h3>{_table(header, spaces)}" if spaces else "")
        + warnings
    )


def _cases(summary: dict[str, Any]) -> str:
    rows = []
    calibrated = any("cv_score" in r for r in summary["cases"])
    for r in summary["cases"]:
        link = f'<a href="{_e(r["folder"])}/{REPORT}">{_e(r["case"])}</a>' if r["status"] != "failed" else _e(r["case"])
        cells = [
            link,
            _e(r["pathologist_score"]),
            _e(r["ish"]),
            _e(r["tool_score"] or r["status"]),
            "✓" if r["agree"] else ("✗" if r["agree"] is False else "–"),
            _num(r["index"], 1),
            _e(r["n_cells"]),
            _e(r["n_tumour_cells"]),
        ]
        if calibrated:
            cells.append(_e(r.get("cv_score")))
        cells += [
            _e(r.get("rerun_identical")),
            _e(r.get("roi_index_spread") and f"{r['roi_index_spread']:.1f}"),
            _e(r["message"]),
        ]
        rows.append(cells)
    header = ["case", "pathologist", "ISH", "wsi-her2", "agree", "index", "cells", "tumour cells"]
    header += ["cross-validated score"] if calibrated else []
    return _table([*header, "rerun identical", "ROI index spread", "message"], rows)


def _figure(figure: Path | None) -> str:
    from wsi_her2.viewer.report_html import data_uri

    if figure is None:
        return ""
    uri = data_uri(figure.read_bytes(), "image/png")
    return f'<h2>Figure</h2><img alt="validation figure" style="max-width:100%" src="{uri}">'


def write_html(path: Path, summary: dict[str, Any], figure: Path | None) -> Path:
    """Write the page; the figure (when drawn) is embedded."""
    from wsi_her2.viewer.report_html import STYLE

    size = summary["sample_size"]
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in summary["notes"])
    failed = "".join(f'<p class="warn">{_e(f["case"])}: {_e(f["message"])}</p>' for f in summary["failed"])
    body = f"""<h1>HER2 IHC validation: {summary["n_scored"]} of {summary["n_cases"]} cases scored</h1>
<p class="muted">{_e(algorithm_line(summary))} · {_e(summary["created"])} · cases from {_e(summary["cases_file"])}</p>
<p class="muted">Index: {_e(summary["index"]["description"])}</p>
{failed}{notes}
<h2>Agreement with the pathologist</h2>{_headline(summary)}
<h3>Confusion matrix</h3>{_confusion(summary)}
<h2>ISH</h2>{_ish(summary)}
<h2>CAP checks for quantitative image analysis</h2>{_checks(summary)}
{_calibration(summary.get("calibration"))}
{_figure(figure)}
<h2>Cases</h2>{_cases(summary)}
<h2>Sample size</h2><p>{_e(size["her2_positive"])} HER2-positive and {_e(size["her2_negative"])} HER2-negative
cases ({_e(size["her2_unresolved_2plus_without_ish"])} 2+ without ISH); {_e(size["basis"])}:
{"met" if size["meets_guideline_minimum"] else "<b>not met</b>"}.</p>
<h2>Caveats</h2>{"".join(f'<p class="small">{_e(c)}</p>' for c in summary["caveats"])}
<p class="small muted">The full figures, settings and metadata are in validation.json.</p>"""
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>HER2 validation</title>'
        f'<link rel="icon" href="data:,"><style>{STYLE}</style></head>\n<body>\n{body}\n'
        f'<p class="muted small">Made by wsi-her2 {_e(summary["wsi_her2_version"])}. Not validated for clinical '
        "use.</p>\n</body></html>\n"
    )
    return write_text(path, page)
