#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU session: fills .whl/ with the wheels the GPU machine
# lacks (Python 3.12, torch/torchvision/timm/opencv/tifffile already there, no internet) and
# .gpu-data/ with two real slides for the pixel comparison and the two real HER2 cores (in
# .gpu-data/ihc/) for the DAB scorer's checks. Both folders are git-ignored; name them in the device
# tool's `carry`. About 32 MB of wheels and 10 MB of images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PIP=${PIP:-python3 -m pip}
rm -rf .whl && mkdir -p .whl .gpu-data/ihc
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl imagecodecs==2026.3.6 shapely openslide-python openslide-bin
for f in slides/aperio-cmu1-small-region.svs slides/ome-tiff-he-crop.ome.tif; do
  [ -f "../shared/fixtures/$f" ] && cp "../shared/fixtures/$f" .gpu-data/
done
for f in her2-tma-core-score0.jpg her2-tma-core-score2plus.jpg; do
  [ -f "../shared/fixtures/ihc/$f" ] && cp "../shared/fixtures/ihc/$f" .gpu-data/ihc/
done
ls -l .whl .gpu-data .gpu-data/ihc
