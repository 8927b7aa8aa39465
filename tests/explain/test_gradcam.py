"""Grad-CAM per stage: it finds the evidence the model was trained on, batched or not, on every architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_models

require_models()
import torch  # noqa: E402

from tests.explain.conftest import INPUT_PX, SQUARE_PX, image_with_square  # noqa: E402
from wsi_her2.errors import ConfigError, ModelError  # noqa: E402
from wsi_her2.explain.gradcam import GradCamExplainer, _to_nchw, load_explainer, normalise  # noqa: E402

QUADRANTS = {"top-left": (8, 10), "top-right": (12, 84), "bottom-left": (86, 6), "bottom-right": (90, 88)}


def _quadrant_mass(cam: np.ndarray) -> dict[str, float]:
    h, w = cam.shape
    total = float(cam.sum()) or 1.0
    parts = {
        "top-left": cam[: h // 2, : w // 2],
        "top-right": cam[: h // 2, w // 2 :],
        "bottom-left": cam[h // 2 :, : w // 2],
        "bottom-right": cam[h // 2 :, w // 2 :],
    }
    return {name: float(part.sum()) / total for name, part in parts.items()}


def _quadrant_of(cam: np.ndarray) -> str:
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    top, left = r < cam.shape[0] / 2, c < cam.shape[1] / 2
    return f"{'top' if top else 'bottom'}-{'left' if left else 'right'}"


@pytest.fixture(scope="module")
def explainer(square_checkpoint: Path) -> GradCamExplainer:
    return load_explainer(str(square_checkpoint), "cpu", batch_size=8)


@pytest.fixture(scope="module")
def square_images() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.stack([image_with_square(rng, INPUT_PX, r, c, SQUARE_PX) for r, c in QUADRANTS.values()])


def test_cam_of_the_trained_class_sits_on_the_bright_square_in_every_quadrant(explainer, square_images) -> None:
    batch = explainer.explain(square_images)  # the predicted class
    assert [explainer.classes[t] for t in batch.targets[:, 0]] == ["3+"] * 4
    assert [layer.path for layer in batch.layers] == ["backbone.layer1.0", "backbone.layer2.0", "backbone.layer3.0",
                                                      "backbone.layer4.0"]  # fmt: skip
    deepest = batch.cams[-1]
    assert deepest.shape == (4, 1, 4, 4)  # 128-px input / 32
    for i, quadrant in enumerate(QUADRANTS):
        assert _quadrant_of(deepest[i, 0]) == quadrant
        assert _quadrant_mass(deepest[i, 0])[quadrant] > 0.5
        for stage in batch.cams[1:]:  # the middle stages localise too
            assert _quadrant_of(stage[i, 0]) == quadrant


def test_cams_are_raw_non_negative_and_normalise_to_one(explainer, square_images) -> None:
    batch = explainer.explain(square_images[:1])
    for cams in batch.cams:
        assert np.isfinite(cams).all() and (cams >= 0).all()
        assert normalise(cams[0, 0]).max() == pytest.approx(1.0)
    # Deeper stages carry larger raw values here (the logit is built there).
    peaks = [float(c.max()) for c in batch.cams]
    assert peaks[-1] > peaks[0]
    assert normalise(np.zeros((3, 3))).max() == 0.0


def test_a_batch_gives_the_same_maps_as_one_image_at_a_time(explainer, square_checkpoint, square_images) -> None:
    together = explainer.explain(square_images)
    alone = load_explainer(str(square_checkpoint), "cpu", batch_size=1).explain(square_images)
    np.testing.assert_allclose(together.probabilities, alone.probabilities, atol=1e-5)
    for a, b in zip(together.cams, alone.cams, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_several_classes_share_one_forward_pass(explainer, square_images) -> None:
    both = explainer.explain(square_images, [0, 3])
    only = explainer.explain(square_images, [3], layers=[-1])
    assert both.targets.tolist() == [[0, 3]] * 4
    assert len(only.cams) == 1 and only.layers[0].stage == 4
    np.testing.assert_allclose(both.cams[-1][:, 1], only.cams[0][:, 0], rtol=1e-4, atol=1e-5)
    # A bright square is evidence against class 0: its map is (almost) empty where the square is.
    assert both.cams[-1][:, 0].max() < 0.1 * both.cams[-1][:, 1].max()


def test_unknown_class_and_layer_are_refused(explainer, square_checkpoint) -> None:
    with pytest.raises(ConfigError, match="not a class") as caught:
        explainer.class_index("4+")
    assert "0, 1+, 2+, 3+" in caught.value.user_message()
    with pytest.raises(ModelError, match="not modules"):
        load_explainer(str(square_checkpoint), "cpu", layers=["backbone.layer9"])


def test_reshape_transform_turns_tokens_and_channels_last_into_nchw() -> None:
    nchw = torch.zeros(2, 96, 7, 7)
    assert _to_nchw(nchw) is nchw
    assert _to_nchw(torch.zeros(2, 7, 7, 96)).shape == (2, 96, 7, 7)
    assert _to_nchw(torch.zeros(2, 49, 32)).shape == (2, 32, 7, 7)
    assert _to_nchw(torch.zeros(2, 50, 32)).shape == (2, 32, 7, 7)  # class token dropped
    with pytest.raises(ModelError):
        _to_nchw(torch.zeros(2, 32))


@pytest.mark.parametrize(
    ("arch", "sides"),
    [
        ("convnext_tiny", [56, 28, 14, 7]),
        ("resnet50", [56, 28, 14, 7]),
        ("mobilenetv2_100", [56, 28, 14, 7]),
        ("inception_v3", [52, 25, 12, 5]),
    ],
)
def test_the_paper_architectures_give_one_nchw_map_per_stage(arch: str, sides: list[int]) -> None:
    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.registry import create_model

    torch.manual_seed(0)
    card = ModelCard(architecture=arch, classes=("0", "1+", "2+", "3+"), stain="ihc")
    explainer = GradCamExplainer(create_model(arch, 4), card, torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 255, (1, 224, 224, 3), dtype=np.uint8)
    batch = explainer.explain(image, [2])
    assert [c.shape[-2:] for c in batch.cams] == [(s, s) for s in sides]
    assert all(np.isfinite(c).all() for c in batch.cams)
    # Each map's channel count matched the module's output channels (NCHW, not NHWC): at least one
    # stage carries signal for random weights.
    assert max(float(c.max()) for c in batch.cams) > 0


def test_maps_equal_pytorch_grad_cams_own_computation(explainer, square_images) -> None:
    """The device-side weighting reproduces the package's GradCAM.get_cam_image (numpy, on host)."""
    from pytorch_grad_cam import GradCAM

    from wsi_her2.models.preprocess import to_input

    ours = explainer.explain(square_images, [3])
    for i, module in enumerate(explainer.modules):
        cam = GradCAM(explainer.model, [module])
        try:
            x = to_input(square_images, explainer.card, "cpu").requires_grad_(True)
            logits = cam.activations_and_grads(x)
            logits[:, 3].sum().backward()
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            theirs = np.maximum(cam.get_cam_image(x, module, None, acts, grads), 0)
        finally:
            cam.activations_and_grads.release()
        np.testing.assert_allclose(ours.cams[i][:, 0], theirs, rtol=1e-4, atol=1e-6)
