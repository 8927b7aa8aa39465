"""wsi-her2 report OUT: a self-contained HTML report of a score or batch folder, to share without a server."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_her2_cli.options import common_options


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_file", type=click.Path(path_type=Path), default=None,
              help="The HTML file to write. [default: RESULT/report.html]")  # fmt: skip
@click.option("--slide", "slide", type=click.Path(path_type=Path), default=None,
              help="The slide file, when it moved since scoring (score folders only).")  # fmt: skip
@click.option("--top", "top_per_class", type=click.IntRange(0, 50), default=None,
              help="Top tiles shown per class. [default: 4; 2 per slide of a batch]")  # fmt: skip
@common_options
def report(
    result: Path, out_file: Path | None, slide: Path | None, top_per_class: int | None, quiet: bool, verbose: int
) -> int:
    """Write a self-contained HTML report of a `score` or `batch` output folder RESULT.

    \b
    One file, images embedded, no external requests: the score, clinical group, class fractions,
    the overlay, the top tiles of each class (read from the slide) and the model card. A batch
    folder gives a table of its slides and a section per slide. The path written goes to stdout.
    """
    from wsi_her2.viewer.report_html import write_report
    from wsi_her2_cli.console import setup_logging

    setup_logging(verbose, quiet)
    path = write_report(result, out_file, slide=slide, top_per_class=top_per_class)
    click.echo(str(path))
    return 0
