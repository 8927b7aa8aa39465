"""wsi-her2 evaluate CHECKPOINT DATA -o OUT: accuracy, precision, recall, F1, kappa and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import EVALUATE, common_options, config_option, settings_sections, table_options


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--allow-stain-mismatch", is_flag=True, help="Evaluate even when --stain differs from the model's.")
@table_options(EVALUATE)
@config_option
@common_options
def evaluate(
    checkpoint: Path,
    data: Path,
    out_dir: Path,
    stain: str | None,
    allow_stain_mismatch: bool,
    batch_size: int,
    quiet: bool,
    verbose: int,
    **options: Any,
) -> None:
    """Evaluate CHECKPOINT (a `wsi-her2 train` folder or its .safetensors) on DATA.

    \b
    Uses the test split of a BCI folder, or every labelled image of a tile set or class folders.
    Prints accuracy beside the majority-class baseline, macro and weighted precision/recall/F1,
    quadratic-weighted kappa, per-class figures and the confusion matrix. Writes into OUT:
      metrics.json, report.md, confusion_matrix.json, confusion_matrix.png, predictions.csv
    """
    from wsi_her2.extras import require_matplotlib, require_torch

    require_torch("`wsi-her2 evaluate` needs")
    require_matplotlib("`wsi-her2 evaluate` (its confusion matrix) needs", extra="models")
    from wsi_her2.training.config import DataConfig
    from wsi_her2.training.evaluate import evaluate_checkpoint, write_evaluation
    from wsi_her2_cli.console import RichProgress, err_console, out_console, setup_logging

    setup_logging(verbose, quiet)
    sections, _ = settings_sections(EVALUATE, options)
    # The model card decides stain, classes and input size; only how to read DATA comes from here.
    readable = ("layout", "labels_csv", "drop_blank", "min_tissue_fraction")
    data_cfg = DataConfig.from_dict({k: v for k, v in sections["data"].items() if k in readable})
    train_section = sections["train"]
    with RichProgress(enabled=not quiet) as progress:
        result = evaluate_checkpoint(
            checkpoint,
            data,
            data_cfg,
            stain=stain,
            allow_stain_mismatch=allow_stain_mismatch,
            device=train_section.get("device", "auto"),
            batch_size=batch_size,
            workers=train_section.get("workers", 2),
            bf16=train_section.get("bf16", True),
            channels_last=train_section.get("channels_last", True),
            progress=progress,
        )
    files = write_evaluation(result, out_dir)
    print_metrics(result.metrics, out_console)
    if not quiet:
        err_console.print(f"wrote {', '.join(str(p) for p in files.values())}")


def print_metrics(metrics: dict[str, Any], console: Any) -> None:
    """The evaluation as rich tables: summary, per class, confusion matrix."""
    from rich.table import Table

    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    model = metrics["model"]
    title = f"{model['name'] or model['architecture']} on {metrics['data']['root']} ({metrics['data']['split']})"
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("images", f"{metrics['images']:,}")
    summary.add_row("accuracy", f"[bold]{pct(metrics['accuracy'])}[/]")
    summary.add_row(
        f"majority baseline (always {metrics['majority_class']})", pct(metrics["majority_baseline_accuracy"])
    )
    for kind in ("macro", "weighted"):
        for name in ("precision", "recall", "f1"):
            summary.add_row(f"{kind} {name}", pct(metrics[f"{kind}_{name}"]))
    summary.add_row("quadratic-weighted kappa", f"{metrics['quadratic_weighted_kappa']:.4f}")
    console.print(summary)
    classes = metrics["classes"]
    per_class = Table(title="per class", title_justify="left")
    for column in ("class", "images", "precision", "recall", "F1"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name in classes:
        row = metrics["per_class"][name]
        per_class.add_row(name, f"{row['support']:,}", pct(row["precision"]), pct(row["recall"]), pct(row["f1"]))
    console.print(per_class)
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    confusion.add_column("true \\ predicted", style="bold")
    for name in classes:
        confusion.add_column(name, justify="right")
    for name, row in zip(classes, metrics["confusion_matrix"]):
        confusion.add_row(name, *(f"{v:,}" for v in row))
    console.print(confusion)
    if metrics.get("label_note"):
        console.print(f"note: {metrics['label_note']}")
