"""Rerun the paper's BCI study: one `wsi-her2 train` + `wsi-her2 evaluate` per cell of its tables.

The grid (Tables I-III of the 2025 paper this project reproduces):

* 3 classes (negative 0/1+, equivocal 2+, positive 3+): ConvNeXt-Tiny, ResNet50, MobileNetV2 and
  InceptionV3, each on IHC and on H&E;
* 4 classes (0, 1+, 2+, 3+): ConvNeXt-Tiny and ResNet50, each on IHC and on H&E.

Each cell trains with the paper's recipe (the defaults of ``wsi-her2 train``) and is evaluated on
BCI's official test split. The table ``OUT/results.md`` puts the paper's figures beside the
measured ones. A cell already evaluated is skipped and a cell interrupted mid-training is resumed,
so rerunning the same command continues the study.

Usage:
    python examples/reproduce_paper.py BCI_ROOT -o OUT [--device cuda] [--weights-dir DIR]
    python examples/reproduce_paper.py BCI_ROOT -o OUT --smoke     # plumbing check: tiny model, 1 epoch

BCI is non-commercial data that you download yourself (see docs/training.md).
Offline, put ImageNet weight files named after the architecture (convnext_tiny.pth,
resnet50.safetensors, ...) into --weights-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ARCH_LABELS = {
    "convnext_tiny": "ConvNeXt-Tiny",
    "resnet50": "ResNet50",
    "mobilenetv2_100": "MobileNetV2",
    "inception_v3": "InceptionV3",
}
STAIN_LABELS = {"ihc": "IHC", "he": "H&E"}
# The paper's test accuracies we are sure of; every other cell says "see paper" (no invented numbers).
PAPER_ACCURACY = {("convnext_tiny", "ihc", 4): "97.79%", ("convnext_tiny", "he", 4): "95.58%"}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def grid() -> list[tuple[str, str, int]]:
    """(architecture, stain, classes) of every cell of the paper's tables."""
    cells = [(arch, stain, 3) for arch in ARCH_LABELS for stain in ("ihc", "he")]
    cells += [(arch, stain, 4) for arch in ("convnext_tiny", "resnet50") for stain in ("ihc", "he")]
    return cells


def cell_name(arch: str, stain: str, classes: int) -> str:
    return f"{arch}-{stain}-{classes}class"


def weight_file(weights_dir: Path | None, arch: str) -> Path | None:
    if weights_dir is None:
        return None
    for suffix in WEIGHT_SUFFIXES:
        candidate = weights_dir / f"{arch}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def run_cli(args: list[str]) -> int:
    """``wsi-her2 ARGS`` in this process (one torch import for the whole study)."""
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    print("$ wsi-her2 " + " ".join(args), flush=True)
    return run_guarded(cli, args)


def train_args(bci: Path, model_dir: Path, arch: str, stain: str, classes: int, opts: argparse.Namespace) -> list[str]:
    """The `wsi-her2 train` arguments of one cell: resume an interrupted run, else start one."""
    epochs = ["--epochs", str(opts.epochs)] if opts.epochs else []
    if (model_dir / "resume" / "state.json").is_file():
        return ["train", "--resume", str(model_dir), *epochs]
    args = ["train", str(bci), "-o", str(model_dir), "--stain", stain, "--classes", str(classes)]
    args += ["--layout", "bci", "--arch", "test_resnet" if opts.smoke else arch, *epochs]
    weights = weight_file(opts.weights_dir, arch)
    if opts.smoke or opts.no_pretrained:
        args.append("--no-pretrained")
    elif weights is not None:
        args += ["--pretrained-weights", str(weights)]
    if opts.smoke:
        args += ["--input-size", "64", "--batch-size", "8", "--lr", "1e-3"]
    return args


def run_cell(bci: Path, out: Path, arch: str, stain: str, classes: int, opts: argparse.Namespace) -> dict:
    """Train and evaluate one cell (or reuse what an earlier run left); returns its metrics or failure."""
    folder = out / cell_name(arch, stain, classes)
    model_dir, eval_dir = folder / "model", folder / "evaluation"
    metrics_file = eval_dir / "metrics.json"
    if metrics_file.is_file() and not opts.force:
        return json.loads(metrics_file.read_text())
    common = ["--device", opts.device, "--workers", str(opts.workers)] + (["-q"] if opts.quiet else [])
    done = model_dir / "done"
    if not done.is_file():
        code = run_cli(train_args(bci, model_dir, arch, stain, classes, opts) + common)
        if code != 0:
            return {"failed": f"train exited with {code}"}
        done.write_text("training finished\n")
    code = run_cli(["evaluate", str(model_dir), str(bci), "-o", str(eval_dir), "--stain", stain, *common])
    if code != 0:
        return {"failed": f"evaluate exited with {code}"}
    return json.loads(metrics_file.read_text())


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def results_table(results: dict[tuple[str, str, int], dict], smoke: bool) -> str:
    lines = [
        "# BCI: the paper's figures beside this run's",
        "",
        "Test split of BCI; accuracy, precision, recall and F1 in percent (macro = unweighted mean over",
        "classes, as in the paper's tables; weighted F1 weights classes by their test counts). The",
        "majority baseline is the accuracy of always predicting the most frequent test class.",
        "",
        "| network | stain | classes | paper accuracy | accuracy | macro precision | macro recall "
        "| macro F1 | weighted F1 | QW kappa | majority baseline | test images |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (arch, stain, classes), m in results.items():
        paper = PAPER_ACCURACY.get((arch, stain, classes), "see paper")
        head = f"| {ARCH_LABELS[arch]} | {STAIN_LABELS[stain]} | {classes} | {paper} "
        if "failed" in m:
            lines.append(head + f"| {m['failed']} |" + " |" * 7)
            continue
        kappa = m.get("quadratic_weighted_kappa")
        lines.append(
            head + f"| {pct(m['accuracy'])} | {pct(m['macro_precision'])} | {pct(m['macro_recall'])} "
            f"| {pct(m['macro_f1'])} | {pct(m['weighted_f1'])} | {'-' if kappa is None else f'{kappa:.3f}'} "
            f"| {pct(m['majority_baseline_accuracy'])} ({m['majority_class']}) | {m['images']} |"
        )
    lines += [
        "",
        "BCI's labels are the HER2 score of the slide each patch came from, not of the patch (dataset",
        "README): these accuracies measure agreement of patches with their slide's score.",
        "BCI's file numbers carry no patient id, so the validation split used to pick the best epoch",
        "is per image: neighbouring patches of one slide can fall on both sides of it.",
    ]
    if smoke:
        lines += [
            "",
            "**Smoke run**: a tiny test network for 1 epoch stands in for every cell; "
            "the figures measure nothing but the plumbing.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bci", type=Path, help="BCI folder (holds HE/ and IHC/)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="study folder")
    parser.add_argument("--epochs", type=int, default=None, help="override the paper's 30 epochs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--weights-dir", type=Path, default=None, help="offline ImageNet weights, <arch>.pth")
    parser.add_argument("--no-pretrained", action="store_true", help="train every cell from scratch")
    parser.add_argument("--only", nargs="*", default=None, help="cell names to run, e.g. convnext_tiny-ihc-4class")
    parser.add_argument("--force", action="store_true", help="re-evaluate cells that have results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--smoke", action="store_true", help="test_resnet, 1 epoch, 64 px: checks the plumbing")
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.epochs = opts.epochs or 1
        opts.workers = 0
        opts.quiet = True
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str, int], dict] = {}
    for arch, stain, classes in grid():
        if opts.only and cell_name(arch, stain, classes) not in opts.only:
            continue
        results[(arch, stain, classes)] = run_cell(opts.bci, out, arch, stain, classes, opts)
    (out / "results.md").write_text(results_table(results, opts.smoke), encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps({cell_name(*k): v for k, v in results.items()}, indent=2), encoding="utf-8"
    )
    print(f"wrote {out / 'results.md'}")
    return 1 if any("failed" in m for m in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
