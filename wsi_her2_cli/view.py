"""wsi-her2 view OUT: the slide and its HER2 heatmap in the browser, served from this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import common_options


def _wait_for_interrupt(server: Any) -> None:
    """Block until Ctrl-C (tests replace this)."""
    del server
    while True:
        time.sleep(3600)


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--slide", "slide", type=click.Path(path_type=Path), default=None,
              help="The slide file, when it moved since scoring (score folders only).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 127.0.0.1 keeps the viewer on this machine.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="TCP port (0 = a free one).")
@click.option("--no-browser", is_flag=True, help="Print the address only; do not open a browser.")
@common_options
def view(result: Path, slide: Path | None, host: str, port: int, no_browser: bool, quiet: bool, verbose: int) -> int:
    """Show a `score` or `batch` output folder RESULT in the browser.

    \b
    The whole slide, zoomable to full resolution, with the heatmap over it: predicted class or
    any class probability (DAB scorer: cell fractions, membrane DAB, cell counts), an opacity slider,
    a readout of the tile under the pointer, the score, the model card and the top tiles per class.
    A batch folder opens on a table of its slides. The address is printed on stdout; the server
    answers this machine only unless --host says otherwise. Stop it with Ctrl-C.
    """
    import webbrowser

    from wsi_her2.viewer.server import ViewerServer
    from wsi_her2_cli.console import err_console, setup_logging

    setup_logging(verbose, quiet)
    server = ViewerServer(result, host=host, port=port, slide=slide)
    url = server.start()
    try:
        click.echo(url)
        if not quiet:
            if host not in ("127.0.0.1", "localhost", "::1"):
                err_console.print(f"[yellow]listening on {host}: anyone who can reach this machine can see the slide")
            err_console.print(f"viewer of {result} at {url} (Ctrl-C to stop)")
        if not no_browser:
            webbrowser.open(url)
        _wait_for_interrupt(server)
    except KeyboardInterrupt:
        if not quiet:
            err_console.print("viewer stopped")
    finally:
        server.stop()
    return 0
