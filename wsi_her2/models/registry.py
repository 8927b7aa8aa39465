"""The classifier architectures, by name, over timm, each with the source paper's head.

Adding an architecture is one :func:`register` call. Every model is a timm backbone with global
average pooling followed by the paper's head (FC 512 + dropout, FC 256 + dropout, class layer);
softmax is applied at inference, not inside the model, so training can use cross-entropy on logits.

Import this module only where torch is needed (``wsi-her2 --help`` must stay instant).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_her2.errors import ConfigError, ModelError


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes:
        name: the name users type (``--arch``).
        timm_name: the timm model it builds.
        pretrained_tag: the timm ImageNet weights the paper's setting corresponds to.
        cam_layers: the last block of each stage (Grad-CAM targets), as module paths inside the
            timm backbone, shallow to deep.
        input_size_px: the input side the paper used (224 for all four, InceptionV3 included).
        description: one line for listings.
        test_only: tiny models for tests and demos, never for real work.
    """

    name: str
    timm_name: str
    pretrained_tag: str | None
    cam_layers: tuple[str, ...]
    input_size_px: int = 224
    description: str = ""
    test_only: bool = False
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture to the registry (its name must be new)."""
    if architecture.name in _REGISTRY:
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    _REGISTRY[architecture.name] = architecture
    return architecture


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name.

    Raises:
        ConfigError: the name is not registered (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(n for n, a in _REGISTRY.items() if not a.test_only)
        raise ConfigError(f"unknown architecture {name!r}", hint=f"choose one of: {known}") from None


def list_architectures(*, include_test: bool = False) -> list[str]:
    """Registered architecture names."""
    return [n for n, a in _REGISTRY.items() if include_test or not a.test_only]


register(
    Architecture(
        "convnext_tiny",
        "convnext_tiny",
        "fb_in1k",
        ("stages.0.blocks.2", "stages.1.blocks.2", "stages.2.blocks.8", "stages.3.blocks.2"),
        description="ConvNeXt-Tiny (the paper's best: 97.79% IHC, 95.58% H&E on BCI, 4 classes)",
    )
)
register(
    Architecture(
        "resnet50",
        "resnet50",
        "tv_in1k",
        ("layer1.2", "layer2.3", "layer3.5", "layer4.2"),
        description="ResNet50 (torchvision ImageNet weights, as in the paper)",
    )
)
register(
    Architecture(
        "mobilenetv2_100",
        "mobilenetv2_100",
        "ra_in1k",
        ("blocks.1", "blocks.2", "blocks.4", "blocks.6"),
        description="MobileNetV2 1.0",
    )
)
register(
    Architecture(
        "inception_v3",
        "inception_v3",
        "tv_in1k",
        ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"),
        description="InceptionV3 (run at 224 px, as in the paper)",
    )
)
register(
    Architecture(
        "test_resnet",
        "test_resnet",
        None,
        ("layer1.0", "layer2.0", "layer3.0", "layer4.0"),
        description="tiny ResNet for tests (no real use)",
        test_only=True,
    )
)
register(
    Architecture(
        "test_convnext",
        "test_convnext",
        None,
        ("stages.0", "stages.1", "stages.2", "stages.3"),
        description="tiny ConvNeXt for tests (no real use)",
        test_only=True,
    )
)


class Her2Classifier(nn.Module):
    """A timm backbone with global average pooling and the paper's head.

    ``forward`` returns logits; apply softmax for probabilities.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        hidden: tuple[int, ...] = (512, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = int(backbone.num_features)  # type: ignore[arg-type]
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = units
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes) for normalised images (batch, 3, H, W)."""
        return self.head(self.backbone(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (batch, num_features)."""
        return self.backbone(images)


def _timm_backbone(arch: Architecture, pretrained: bool | str | Path) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "avg", **arch.timm_kwargs}
    if isinstance(pretrained, (str, Path)) and pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise ModelError(f"pretrained weight file not found: {path}", hint="check --pretrained-weights")
        # timm loads a local file with the model's own filter (torchvision/original key names),
        # without any network access; .pth files are read with weights_only (no unpickling of code).
        try:
            return timm.create_model(
                arch.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load {path} as {arch.name} ImageNet weights ({type(exc).__name__}: {exc})",
                hint=f"give a timm or torchvision weight file for {arch.timm_name}",
            ) from exc
    if pretrained is True:
        if arch.pretrained_tag is None:
            raise ModelError(f"{arch.name} has no pretrained weights", hint="use --no-pretrained")
        return _download_pretrained(arch, kwargs)
    return timm.create_model(arch.timm_name, pretrained=False, **kwargs)


def _cached_hub_file(name: str) -> str | None:
    """The Hugging Face cache's copy of timm weights ``name`` (e.g. convnext_tiny.fb_in1k), if any."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str):
                return path
    except Exception:  # any cache oddity: behave as if nothing is cached
        return None
    return None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout_s``."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download_pretrained(arch: Architecture, kwargs: dict[str, Any]) -> nn.Module:
    """Timm's ImageNet weights: from the local cache, else from the hub if it answers within seconds.

    Offline, this fails in about three seconds with a hint, instead of the hub client's retries.
    """
    import timm

    name = f"{arch.timm_name}.{arch.pretrained_tag}"
    hint = (
        "download the weight file elsewhere and pass it with --pretrained-weights FILE, "
        "or train from scratch with --no-pretrained"
    )
    cached = _cached_hub_file(name)
    if cached is not None:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    if not _hub_reachable():
        raise ModelError(
            f"cannot get the ImageNet weights {name}: no internet and not in the Hugging Face cache", hint=hint
        )
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"cannot download the ImageNet weights {name} ({type(exc).__name__}: {exc})", hint=hint
        ) from exc


def create_model(
    architecture: str,
    num_classes: int,
    *,
    pretrained: bool | str | Path = False,
    hidden: tuple[int, ...] = (512, 256),
    dropout: float = 0.5,
) -> Her2Classifier:
    """Build a classifier.

    Args:
        architecture: a registered name (see :func:`list_architectures`).
        num_classes: 4 (0, 1+, 2+, 3+) or 3 (negative, equivocal, positive).
        pretrained: False for random weights; True for timm's ImageNet weights (cache or hub);
            a path for a local timm/torchvision weight file.
        hidden: widths of the head's hidden layers.
        dropout: dropout after each hidden layer.

    Raises:
        ConfigError: unknown architecture or class count.
        ModelError: pretrained weights cannot be loaded.
    """
    arch = get_architecture(architecture)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    torch_backbone = _timm_backbone(arch, pretrained)
    return Her2Classifier(torch_backbone, num_classes, tuple(hidden), dropout)
