"""wsi-her2 info SLIDE: what a slide is."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_her2_cli.options import INFO, common_options, table_options


@click.command()
@click.argument("slide", type=click.Path(path_type=Path))
@table_options(INFO)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")
@click.option("--properties", is_flag=True, help="Also list the raw metadata properties.")
@common_options
def info(
    slide: Path, mpp: float | None, backend: str, as_json: bool, properties: bool, quiet: bool, verbose: int
) -> None:
    """Show vendor, size, pyramid levels, µm/px, magnification and associated images of SLIDE."""
    from rich.table import Table

    from wsi_her2.outputs.atomic import to_json
    from wsi_her2.slide import open_slide
    from wsi_her2_cli.console import out_console

    with open_slide(slide, mpp=mpp, backend=backend) as reader:  # type: ignore[arg-type]  # choice-checked
        facts = reader.info
    if as_json:
        click.echo(to_json(facts.to_dict(with_properties=properties)))
        return
    table = Table(title=str(slide), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("vendor / format", facts.vendor)
    table.add_row("reader", f"{facts.backend} ({facts.backend_reason})")
    table.add_row("size (level 0)", f"{facts.width:,} x {facts.height:,} px")
    if facts.has_mpp:
        um_w, um_h = facts.width * facts.mpp_x / 1000, facts.height * facts.mpp_y / 1000  # type: ignore[operator]
        table.add_row(
            "µm/px", f"{facts.mpp_x:.4g} x {facts.mpp_y:.4g} ({facts.mpp_source}); {um_w:.2f} x {um_h:.2f} mm"
        )
    elif facts.metadata_mpp is not None:
        table.add_row("µm/px", f"[red]implausible in metadata ({facts.metadata_mpp:g}); give --mpp[/red]")
    else:
        table.add_row("µm/px", "[red]unknown; give --mpp[/red]")
    table.add_row("objective", f"{facts.objective_power:g}x" if facts.objective_power else "unknown")
    table.add_row("compression", facts.compression or "-")
    for level in facts.levels:
        tiles = f", tiles {level.tile_width}x{level.tile_height}" if level.tile_width else ""
        table.add_row(
            f"level {level.index}",
            f"{level.width:,} x {level.height:,} px, downsample {level.downsample:.4g}{tiles}",
        )
    table.add_row("associated images", ", ".join(facts.associated_images) or "none")
    if properties:
        for key, value in sorted(facts.properties.items()):
            table.add_row(key, value)
    out_console.print(table)
