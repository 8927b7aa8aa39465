"""The inference engine: deterministic on CPU, clear device errors, survives out-of-memory."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_models

require_models()
import torch  # noqa: E402

from wsi_her2.config import InferenceConfig  # noqa: E402
from wsi_her2.errors import ConfigError, DeviceError  # noqa: E402
from wsi_her2.inference import TorchEngine, resolve_device  # noqa: E402
from wsi_her2.models.card import ModelCard  # noqa: E402
from wsi_her2.models.registry import create_model  # noqa: E402

CARD = ModelCard(architecture="test_resnet", classes=("0", "1+", "2+", "3+"), stain="ihc", input_size_px=64)


def _engine(**cfg: object) -> TorchEngine:
    torch.manual_seed(0)
    return TorchEngine(create_model("test_resnet", 4), CARD, InferenceConfig(device="cpu", **cfg), 80)  # type: ignore[arg-type]


def test_probabilities_are_deterministic_and_sum_to_one() -> None:
    images = np.random.default_rng(1).integers(0, 255, (20, 80, 80, 3), dtype=np.uint8)
    a = _engine(batch_size=8).predict(images)
    b = _engine(batch_size=8).predict(images)
    assert a.shape == (20, 4) and np.array_equal(a, b)
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-5)


def test_cuda_asked_for_and_absent_is_a_device_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_bad_device_names_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        InferenceConfig(device="tpu")


def test_out_of_memory_halves_the_batch_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(batch_size=8)
    forward = engine._forward
    calls: list[int] = []

    def fragile(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return forward(x)

    monkeypatch.setattr(engine, "_forward", fragile)
    images = np.random.default_rng(2).integers(0, 255, (8, 80, 80, 3), dtype=np.uint8)
    probs = engine.predict(images)
    assert probs.shape == (8, 4) and calls[0] == 8 and max(calls[-4:]) == 2
    assert any("out of memory" in note for note in engine.notes)
    reference = _engine(batch_size=8).predict(images)
    assert np.allclose(probs, reference, atol=1e-5)


def test_out_of_memory_at_one_tile_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(batch_size=2)

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(engine, "_forward", broken)
    with pytest.raises(DeviceError, match="out of memory"):
        engine.predict(np.zeros((2, 80, 80, 3), np.uint8))
