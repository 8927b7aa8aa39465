"""Checkpoints: the registry builds the paper's head; saving and loading is safe and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_models

require_models()
import torch  # noqa: E402

from wsi_her2.errors import ConfigError, InputNotFoundError, ModelError  # noqa: E402
from wsi_her2.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard, read_card  # noqa: E402
from wsi_her2.models.loading import load_checkpoint, save_checkpoint  # noqa: E402
from wsi_her2.models.registry import create_model, get_architecture, list_architectures  # noqa: E402


def _card(**changes: object) -> ModelCard:
    base = {"architecture": "test_resnet", "classes": ("0", "1+", "2+", "3+"), "stain": "ihc", "name": "tiny"}
    base.update(changes)
    return ModelCard(**base)  # type: ignore[arg-type]


def test_the_four_paper_architectures_are_registered_with_cam_layers() -> None:
    assert set(list_architectures()) == {"convnext_tiny", "resnet50", "mobilenetv2_100", "inception_v3"}
    for name in list_architectures():
        assert len(get_architecture(name).cam_layers) == 4


def test_head_is_gap_then_512_then_256_then_classes() -> None:
    model = create_model("test_resnet", 3)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [512, 256, 3]
    dropouts = [m for m in model.head if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 2
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        create_model("alexnet", 4)
    assert "convnext_tiny" in caught.value.user_message()


def test_missing_pretrained_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        create_model("resnet50", 4, pretrained=tmp_path / "nope.pth")


def test_local_torchvision_style_weights_load_without_network(tmp_path: Path) -> None:
    import timm

    donor = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(donor.state_dict(), path)
    model = create_model("test_resnet", 4, pretrained=path)
    assert torch.equal(model.backbone.conv1[0].weight, donor.conv1[0].weight)


def test_round_trip_keeps_weights_and_card(tmp_path: Path) -> None:
    model = create_model("test_resnet", 4).eval()
    folder = save_checkpoint(model, _card(tile_mpp=0.5), tmp_path / "ckpt")
    loaded, card = load_checkpoint(folder)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(model(x), loaded(x))
    assert card.tile_mpp == 0.5 and len(card.weights_sha256) == 64
    # the weight file alone also finds its card
    _, same = load_checkpoint(folder / WEIGHTS_FILE)
    assert same == card


def test_replaced_weights_do_not_match_the_card(tmp_path: Path) -> None:
    folder = save_checkpoint(create_model("test_resnet", 4), _card(), tmp_path / "a")
    other = save_checkpoint(create_model("test_resnet", 4), _card(), tmp_path / "b")
    (folder / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ModelError, match="does not match its model card"):
        load_checkpoint(folder)


def test_card_that_names_another_architecture_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(create_model("test_resnet", 4), _card(), tmp_path / "a")
    data = json.loads((folder / CARD_FILE).read_text())
    data["architecture"] = "test_convnext"
    (folder / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="do not fit a test_convnext"):
        load_checkpoint(folder)


def test_card_with_wrong_class_count_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(create_model("test_resnet", 4), _card(), tmp_path / "a")
    data = json.loads((folder / CARD_FILE).read_text())
    data["classes"] = ["negative", "equivocal", "positive"]
    (folder / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="3 classes"):
        load_checkpoint(folder)


def test_pickle_checkpoints_are_never_loaded(tmp_path: Path) -> None:
    evil = tmp_path / "model.pth"
    evil.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelError, match="pickle"):
        read_card(evil)


def test_missing_and_broken_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no weight file"):
        load_checkpoint(tmp_path / "empty")
    folder = save_checkpoint(create_model("test_resnet", 4), _card(), tmp_path / "c")
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_checkpoint(folder)


def test_invalid_card_values_are_refused() -> None:
    with pytest.raises(ModelError, match="stain"):
        _card(stain="fluorescence")


def test_offline_imagenet_weights_fail_fast_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from wsi_her2.models import registry

    monkeypatch.setattr(registry, "_cached_hub_file", lambda name: None)
    monkeypatch.setattr(registry, "_hub_reachable", lambda timeout_s=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as caught:
        create_model("resnet50", 4, pretrained=True)
    assert time.perf_counter() - t0 < 5
    assert "--pretrained-weights" in caught.value.user_message() and "--no-pretrained" in caught.value.user_message()
