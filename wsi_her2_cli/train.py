"""wsi-her2 train DATA -o OUT: fine-tune a classifier (the paper's recipe by default) on BCI or your tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import common_options, config_option, stage_configs

PAPER_ARCHITECTURES = ("convnext_tiny", "resnet50", "mobilenetv2_100", "inception_v3")


def data_options(func: Any) -> Any:
    """Options that say how a dataset folder is read (shared with ``evaluate``)."""
    for decorator in reversed(
        [
            click.option(
                "--layout",
                type=click.Choice(["auto", "bci", "tiles", "folders"]),
                default=None,
                help="Dataset layout: BCI, a --save-tiles folder with labels, or ROOT/<class>/*.png. [default: auto]",
            ),
            click.option(
                "--labels",
                "labels_csv",
                type=click.Path(path_type=Path),
                default=None,
                help="CSV with columns file,label[,slide] labelling a tile folder (instead of tiles.csv).",
            ),
            click.option(
                "--drop-blank/--keep-blank",
                default=None,
                help="Drop glass-only images with the tiler's empty-tile check. [default: keep]",
            ),
            click.option(
                "--min-tissue",
                "min_tissue_fraction",
                type=click.FloatRange(0, 1),
                default=None,
                help="With --drop-blank: least tissue fraction of a kept image. [default: 0.1]",
            ),
            click.option(
                "--device",
                type=click.Choice(["auto", "cpu", "cuda", "mps"]),
                default=None,
                help="Compute device. [default: auto = CUDA, then MPS, then CPU]",
            ),
            click.option(
                "--workers",
                type=click.IntRange(0, 64),
                default=None,
                help="Worker processes decoding images. [default: 2]",
            ),
        ]
    ):
        func = decorator(func)
    return func


@click.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Output folder.")
@click.option(
    "--arch",
    "architecture",
    default=None,
    help=f"Network: {', '.join(PAPER_ARCHITECTURES)}. [default: convnext_tiny]",
)
@click.option("--stain", type=click.Choice(["ihc", "he"]), default=None, help="Stain of the images. [default: ihc]")
@click.option(
    "--classes",
    "num_classes",
    type=click.Choice(["4", "3"]),
    default=None,
    help="4 = 0/1+/2+/3+; 3 = negative (0, 1+) / equivocal (2+) / positive (3+). [default: 4]",
)
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None, help="Epochs. [default: 30]")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Batch size. [default: 16]")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Adam learning rate. [default: 1e-4]",
)
@click.option(
    "--pretrained-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local ImageNet weight file (timm/torchvision) for the backbone: works offline.",
)
@click.option("--no-pretrained", is_flag=True, help="Train from random weights (no ImageNet start).")
@click.option(
    "--class-weights",
    "class_weighting",
    type=click.Choice(["none", "balanced"]),
    default=None,
    help="Loss weights per class; balanced = inverse class frequency. [default: none]",
)
@click.option(
    "--balanced-sampler/--no-balanced-sampler",
    default=None,
    help="Draw each class equally often. [default: no]",
)
@click.option(
    "--cache-images/--no-cache-images",
    default=None,
    help="Decode and resize every image once into memory (150 KB each at 224 px): files are read once.",
)
@click.option(
    "--hed-jitter",
    type=click.FloatRange(0, 0.5),
    default=None,
    help="Stain augmentation strength (e.g. 0.05). [default: 0 = off, as the paper]",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 0.9, max_open=True),
    default=None,
    help="Share of training images held out for validation (by slide when known). [default: 0.1]",
)
@click.option(
    "--input-size",
    "input_size_px",
    type=click.IntRange(16, 2048),
    default=None,
    help="Network input side in px.",
)
@click.option(
    "--tile-size",
    "tile_size_px",
    type=click.IntRange(16, 16384),
    default=None,
    help="Side of a training image in px at --tile-mpp, recorded for `score`. [default: from the data]",
)
@click.option(
    "--tile-mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="µm/px of the training images, recorded so `score` cuts slide tiles alike. [default: unknown]",
)
@click.option("--seed", type=click.IntRange(0), default=None, help="Random seed. [default: 0]")
@click.option("--name", default=None, help="Model name in the card.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this output folder from its last finished epoch.",
)
@data_options
@config_option
@common_options
def train(
    data: Path | None,
    out_dir: Path | None,
    architecture: str | None,
    stain: str | None,
    num_classes: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    pretrained_weights: Path | None,
    no_pretrained: bool,
    class_weighting: str | None,
    balanced_sampler: bool | None,
    cache_images: bool | None,
    hed_jitter: float | None,
    val_fraction: float | None,
    input_size_px: int | None,
    tile_size_px: int | None,
    tile_mpp: float | None,
    seed: int | None,
    name: str | None,
    resume_dir: Path | None,
    layout: str | None,
    labels_csv: Path | None,
    drop_blank: bool | None,
    min_tissue_fraction: float | None,
    device: str | None,
    workers: int | None,
    config_path: Path | None,
    quiet: bool,
    verbose: int,
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
    from wsi_her2.training.config import DataConfig, TrainConfig
    from wsi_her2.training.fit import run_training
    from wsi_her2.training.plan import prepare_training, saved_configs
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging

    setup_logging(verbose, quiet)
    if pretrained_weights is not None and no_pretrained:
        raise ConfigError("--pretrained-weights and --no-pretrained contradict each other", hint="give one")
    sections = stage_configs(
        config_path,
        data={
            "layout": layout,
            "stain": stain,
            "num_classes": int(num_classes) if num_classes else None,
            "labels_csv": str(labels_csv) if labels_csv else None,
            "val_fraction": val_fraction,
            "drop_blank": drop_blank,
            "min_tissue_fraction": min_tissue_fraction,
            "input_size_px": input_size_px,
            "tile_size_px": tile_size_px,
            "tile_mpp": tile_mpp,
        },
        train={
            "architecture": architecture,
            "pretrained": False if no_pretrained else None,
            "pretrained_weights": str(pretrained_weights) if pretrained_weights else None,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "class_weighting": class_weighting,
            "balanced_sampler": balanced_sampler,
            "hed_jitter": hed_jitter,
            "cache_images": cache_images,
            "seed": seed,
            "workers": workers,
            "device": device,
            "name": name,
        },
    )
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
