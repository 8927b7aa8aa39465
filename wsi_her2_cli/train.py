"""wsi-her2 train DATA -o OUT: fine-tune a classifier (the paper's recipe by default) on BCI or your tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import TRAIN, common_options, config_option, settings_sections, table_options


@click.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Output folder.")
@table_options(TRAIN)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this output folder from its last finished epoch.",
)
@config_option
@common_options
def train(
    data: Path | None,
    out_dir: Path | None,
    pretrained_weights: Path | None,
    no_pretrained: bool,
    resume_dir: Path | None,
    quiet: bool,
    verbose: int,
    **options: Any,
) -> None:
    """Train a HER2 classifier on DATA and write the checkpoint into OUT.

    \b
    DATA is a BCI folder (ROOT/{HE,IHC}/{train,test}/NNNNN_train_2+.png), a folder written by
    `wsi-her2 tile --save-tiles` with its tiles.csv label column filled in (or --labels CSV),
    or class folders ROOT/<class>/*.png. The defaults are the paper's recipe: ImageNet weights,
    Adam 1e-4 (/10 after 15 epochs), 30 epochs, batch 16, flips and shifts.
    \b
    Writes into OUT:
      model.safetensors, model_card.json   the best epoch (validation macro-F1), for `score --model`
      training_log.csv, training_curves.png   loss and accuracy per epoch
      train_config.json, split.csv, resume/   the settings, the split, the state for --resume
    """
    from wsi_her2.errors import ConfigError
    from wsi_her2.extras import require_matplotlib, require_torch

    require_torch("`wsi-her2 train` needs")
    require_matplotlib("`wsi-her2 train` (its training curves) needs", extra="models")
    from wsi_her2.training.config import DataConfig, TrainConfig
    from wsi_her2.training.fit import run_training
    from wsi_her2.training.plan import prepare_training, saved_configs
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging

    setup_logging(verbose, quiet)
    if pretrained_weights is not None and no_pretrained:
        raise ConfigError("--pretrained-weights and --no-pretrained contradict each other", hint="give one")
    sections, _ = settings_sections(TRAIN, {**options, "pretrained_weights": pretrained_weights,
                                            "no_pretrained": no_pretrained})  # fmt: skip
    if resume_dir is not None:
        if out_dir is not None and out_dir.resolve() != resume_dir.resolve():
            raise ConfigError("--resume and -o name different folders", hint="give only --resume OUT")
        out_dir = resume_dir
        saved_root, saved_data, saved_train = saved_configs(resume_dir)
        data = data or saved_root
        sections["data"] = {**saved_data.to_dict(), **sections["data"]}
        sections["train"] = {**saved_train.to_dict(), **sections["train"]}
    if data is None or out_dir is None:
        raise click.UsageError("give DATA and -o OUT (or --resume OUT to continue a run)")
    data_cfg = DataConfig.from_dict(sections["data"])
    train_cfg = TrainConfig.from_dict(sections["train"])
    with RichProgress(enabled=not quiet) as progress:
        plan = prepare_training(data, out_dir, data_cfg, train_cfg, resume=resume_dir is not None, progress=progress)
    if not quiet:
        print_plan(plan, err_console)
    try:
        with RichProgress(enabled=not quiet) as progress:
            result = run_training(plan, progress=progress)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished epochs are saved; continue with: wsi-her2 train --resume {out_dir}")
        raise
    if not quiet:
        print_result(result, err_console)


def print_plan(plan: Any, console: Any) -> None:
    """The data and the recipe, before training starts."""
    from rich.table import Table

    table = Table(title=f"training data: {plan.data_root} ({plan.images.layout})", title_justify="left")
    table.add_column("class", style="bold")
    table.add_column("train", justify="right")
    table.add_column("validation", justify="right")
    table.add_column("share", justify="right")
    train_counts, val_counts = plan.train_images.counts(), plan.val_images.counts()
    total = max(1, len(plan.images))
    for name in plan.card.classes:
        n = train_counts[name] + val_counts[name]
        table.add_row(name, f"{train_counts[name]:,}", f"{val_counts[name]:,}", f"{n / total:.1%}")
    table.add_row("all", f"{len(plan.train_images):,}", f"{len(plan.val_images):,}", "100%")
    console.print(table)
    info = plan.card.training_data
    notes = [f"validation split {info['val_split']}"]
    if info.get("dropped_blank"):
        notes.append(f"{info['dropped_blank']} blank images dropped")
    if info.get("skipped_unlabelled"):
        notes.append(f"{info['skipped_unlabelled']} unlabelled tiles skipped")
    cfg = plan.train
    start = "random weights" if not (cfg.pretrained or cfg.pretrained_weights) else "ImageNet weights"
    console.print(
        f"{cfg.architecture} from {start}, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, "
        f"device {plan.device.type}; " + "; ".join(notes)
    )
    if plan.card.label_granularity == "slide":
        console.print(f"[yellow]note:[/] {plan.card.notes}")


def print_result(result: Any, console: Any) -> None:
    """Where the checkpoint is and how good its epoch was."""
    val = result.best_metrics
    line = f"best epoch {result.best_epoch}"
    if val:
        line += (
            f": validation accuracy {100 * val['accuracy']:.2f}% (majority baseline "
            f"{100 * val['majority_baseline_accuracy']:.2f}%), macro F1 {100 * val['macro_f1']:.2f}%"
        )
    console.print(line)
    console.print(f"checkpoint: {result.out_dir} (use with `wsi-her2 evaluate` or `wsi-her2 score --model`)")
