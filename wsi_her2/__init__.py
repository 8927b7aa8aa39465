"""wsi-her2: HER2 scoring of breast cancer whole-slide images.

The public API grows with the pipeline; see ``__all__``.
"""

from wsi_her2._version import __version__
from wsi_her2.errors import WsiHer2Error

__all__ = ["WsiHer2Error", "__version__"]
