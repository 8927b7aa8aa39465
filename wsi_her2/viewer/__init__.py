"""See a scored slide: a local web viewer (slide + HER2 heatmap) and a self-contained HTML report.

``wsi-her2 view OUT`` runs :class:`~wsi_her2.viewer.server.ViewerServer` over a ``score`` or ``batch``
output folder; ``wsi-her2 report OUT`` writes :func:`~wsi_her2.viewer.report_html.write_report`.
Imports are lazy: this package adds nothing to the cost of ``import wsi_her2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsi_her2.viewer.report_html import render_report, write_report
    from wsi_her2.viewer.result import BatchFolder, ScoreView, load_result
    from wsi_her2.viewer.server import ViewerServer

__all__ = ["BatchFolder", "ScoreView", "ViewerServer", "load_result", "render_report", "write_report"]

_WHERE = {
    "ViewerServer": "wsi_her2.viewer.server",
    "ScoreView": "wsi_her2.viewer.result",
    "BatchFolder": "wsi_her2.viewer.result",
    "load_result": "wsi_her2.viewer.result",
    "render_report": "wsi_her2.viewer.report_html",
    "write_report": "wsi_her2.viewer.report_html",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
