"""The package installs what it should and the command line starts fast."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_wheel_holds_every_package_and_the_viewer_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("wsi_her2-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        init.relative_to(ROOT).as_posix()
        for top in ("wsi_her2", "wsi_her2_cli")
        for init in (ROOT / top).rglob("__init__.py")
    }
    expected |= {"wsi_her2_cli/main.py", "wsi_her2/viewer/static/viewer.js", "wsi_her2/py.typed"}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert not any(name.startswith("tests/") for name in names)


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


def test_the_dab_scorer_does_not_import_torch_where_no_gpu_can_be() -> None:
    import os

    if os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg"):
        pytest.skip("this machine may have a GPU: --device auto asks torch")
    code = (
        "import sys\n"
        "from wsi_her2.config import InferenceConfig\n"
        "from wsi_her2.models import load_scorer\n"
        "scorer = load_scorer('dab', inference=InferenceConfig(device='auto'))\n"
        "print(scorer.device, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["cpu", "False"]
