"""GPU correctness: the CUDA path (bf16, channels_last, GPU resize, pinned overlap) agrees with the CPU.

Scores the same slide with the same random ConvNeXt-Tiny checkpoint on CPU (fp32) and CUDA (bf16),
then compares per-tile probabilities and the slide score. Run on a machine with a GPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_tiling import make_slide


def main() -> None:
    import torch

    from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig
    from wsi_her2.models import load_scorer
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model
    from wsi_her2.pipeline import score_slide
    from wsi_her2.settings import ScoreSettings

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return
    slide = make_slide()
    torch.manual_seed(0)
    card = ModelCard(architecture="convnext_tiny", classes=("0", "1+", "2+", "3+"), stain="he", name="check")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(create_model("convnext_tiny", 4), card, Path(tmp) / "ckpt")
        results = {}
        for device in ("cpu", "cuda"):
            scorer = load_scorer(str(ckpt), inference=InferenceConfig(device=device, batch_size=64))
            settings = ScoreSettings(grid=GridConfig(tile_size_px=1024), grid_user_set=frozenset({"tile_size_px"}),
                                     loader=LoaderConfig(workers=8), check_stain=False)  # fmt: skip
            results[device] = score_slide(slide, scorer, settings)
            print(device, scorer.runtime())
            scorer.close()
    cpu, gpu = results["cpu"], results["cuda"]
    a, b = cpu.predictions.probabilities, gpu.predictions.probabilities
    both = cpu.predictions.scored & gpu.predictions.scored
    diff = np.abs(a[both] - b[both])
    # Random weights give near-uniform probabilities, where bf16 rounding flips ties: judge the
    # class agreement on tiles whose top two CPU probabilities differ by at least 0.02.
    top2 = np.sort(a[both], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= 0.02
    agree = (a[both][clear].argmax(1) == b[both][clear].argmax(1)).mean() if clear.any() else 1.0
    print(
        f"tiles {both.sum()}: max |p_cpu - p_cuda| = {diff.max():.4f}, mean {diff.mean():.5f}; class agreement {agree:.1%} on {clear.sum()} tiles without near-ties"
    )
    print(f"slide score cpu {cpu.score.score} / cuda {gpu.score.score}; "
          f"GPU path: {gpu.runtime['precision']}, channels_last {gpu.runtime['channels_last']}, tile input "
          f"{gpu.config['loader']['output_size_px']} px resized on the GPU")  # fmt: skip
    ok = diff.max() < 0.05 and agree > 0.97 and cpu.score.score == gpu.score.score
    print("GPU CHECK", "PASSED" if ok else "FAILED")


if __name__ == "__main__":
    main()
