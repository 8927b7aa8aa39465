"""The package installs what it should and the command line starts fast."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "wsi_her2").rglob("__init__.py")
        if "static" not in init.parts
    }
    found |= {"wsi_her2_cli"}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from wsi_her2_cli.main import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "names = ('torch', 'timm', 'cv2', 'openslide', 'zarr', 'matplotlib')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", f"--help imported: {out.stdout[-200:]}"


def test_version_is_reported() -> None:
    from wsi_her2 import __version__

    out = subprocess.run([sys.executable, "-m", "wsi_her2_cli.main", "--version"], capture_output=True, text=True)
    assert __version__ in out.stdout
