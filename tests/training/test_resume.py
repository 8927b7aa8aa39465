"""The resumable state: safetensors + JSON, exact round trip, damage detected."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import require_models

require_models()
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from wsi_her2.errors import InputNotFoundError, ModelError  # noqa: E402
from wsi_her2.models.registry import create_model  # noqa: E402
from wsi_her2.training.resume import STATE_DIR, STATE_TENSORS, load_state, save_state, state_exists  # noqa: E402


def _objects() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    model = create_model("test_resnet", 4, hidden=(16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)


def test_state_round_trip_restores_everything(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, optimizer, scheduler = _objects()
    for _ in range(3):
        model(torch.rand(2, 3, 32, 32)).sum().backward()
        optimizer.step()
        scheduler.step()
    save_state(tmp_path, model, optimizer, scheduler, epochs_done=3, best_metric=0.5, best_epoch=2)
    assert state_exists(tmp_path) and not list(tmp_path.glob("**/*.pt*"))  # no pickles
    expected = (torch.rand(3), np.random.rand(), random.random())

    other, other_opt, other_sched = _objects()
    torch.rand(5), np.random.rand(7), random.random()  # move every generator on
    info = load_state(tmp_path, other, other_opt, other_sched)
    assert (info["epochs_done"], info["best_metric"], info["best_epoch"]) == (3, 0.5, 2)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(value, other_opt.state_dict()["state"][pid][key])
    assert other_opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert other_sched.state_dict() == scheduler.state_dict()
    assert other_opt.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]


def test_missing_or_damaged_state_is_refused(tmp_path: Path) -> None:
    model, optimizer, scheduler = _objects()
    with pytest.raises(InputNotFoundError, match="no training state"):
        load_state(tmp_path, model, optimizer, scheduler)
    save_state(tmp_path, model, optimizer, scheduler, epochs_done=1, best_metric=0.1, best_epoch=1)
    tensors = tmp_path / STATE_DIR / STATE_TENSORS
    tensors.write_bytes(tensors.read_bytes()[:-10])
    with pytest.raises(ModelError, match="incomplete"):
        load_state(tmp_path, model, optimizer, scheduler)


def test_state_of_another_model_is_refused(tmp_path: Path) -> None:
    model, optimizer, scheduler = _objects()
    save_state(tmp_path, model, optimizer, scheduler, epochs_done=1, best_metric=0.1, best_epoch=1)
    other = create_model("test_resnet", 3, hidden=(16,))
    other_opt = torch.optim.Adam(other.parameters())
    with pytest.raises(ModelError, match="does not fit"):
        load_state(tmp_path, other, other_opt, torch.optim.lr_scheduler.StepLR(other_opt, 1))
