"""Optional dependencies: imported only where they are used, with one clear error naming the extra.

``pip install wsi-her2`` installs the core (readers, tiler, DAB scorer, writers, viewer, batch,
command line). ``[models]`` adds PyTorch, timm and grad-cam for trained models; ``[explain]``
adds matplotlib for the figures of ``wsi-her2 explain``; ``[dask]`` adds the cluster executor.
"""

from __future__ import annotations

import importlib.util

from wsi_her2.errors import ConfigError, ModelError, WsiHer2Error

# What each extra installs (import names), and the name users know the first one by.
EXTRAS: dict[str, tuple[str, ...]] = {
    "models": ("torch", "torchvision", "timm", "safetensors", "pytorch_grad_cam", "matplotlib"),
    "explain": ("matplotlib",),
    "dask": ("distributed",),
}
_KNOWN_AS = {"torch": "PyTorch", "pytorch_grad_cam": "grad-cam", "distributed": "Dask"}


def missing(module: str) -> bool:
    """True when ``module`` cannot be imported here (checked without importing it)."""
    return importlib.util.find_spec(module) is None


def require_extra(
    module: str, *, extra: str, purpose: str, error: type[WsiHer2Error] = ConfigError, note: str = ""
) -> None:
    """Raise ``error`` naming the extra to install when ``module`` is not installed.

    Args:
        module: the import name needed.
        extra: the extra of wsi-her2 that installs it.
        purpose: what needs it, with the verb: "trained models need", "the explain figures need".
        error: the error class (its exit code).
        note: added to the hint, e.g. what works without it.
    """
    if missing(module):
        name = _KNOWN_AS.get(module, module)
        hint = f"pip install 'wsi-her2[{extra}]'" + (f" ({note})" if note else "")
        raise error(f"{purpose} {name}, which is not installed", hint=hint)


def require_torch(purpose: str) -> None:
    """PyTorch for ``purpose`` (exit 7, as every trained-model problem)."""
    require_extra(
        "torch", extra="models", purpose=purpose, error=ModelError,
        note="the DAB scorer, --model dab, needs no PyTorch",
    )  # fmt: skip


def require_matplotlib(purpose: str, extra: str = "explain") -> None:
    """Matplotlib for the figures of ``purpose``."""
    require_extra("matplotlib", extra=extra, purpose=purpose)
